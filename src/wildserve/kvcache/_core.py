"""Numba kernels every eviction policy shares: one definition serves the block pool and the replay.

A policy is six small jitted hooks over its *arena*: one flat int64 array holding a header, per-block
fields (field-major: field ``f`` of block ``s`` sits at ``HDR + f * n + s``) and a policy region of
per-class tables (class-major: entry ``j`` of class ``c`` in table ``t`` sits at ``tab(a, t, c) + j``;
the header records each table's offset and width, so the generic code can grow and widen every
policy's arena). Floats are stored by bit pattern (``getf``/``putf``). One array, not a tuple of
arrays, because numba reference-counts every array passed to a call it does not inline: with two or
more array arguments a hook call costs ~100 ns instead of ~2 ns.

The generic drivers below own what is the same for every policy: the per-block structure (flags,
prefix-tree parent and child count, push sequence, depth), the leaf-only rule (a non-leaf that reaches
the head of the candidate order is parked until its last cached child is evicted, then re-inserted
under its own key), and the offline replay loop, which mirrors ``engine.BlockPool`` call for call.
The Python per-operation API (``ArrayPolicy``) and the replay call the same drivers and hooks, so the
engine and the simulator cannot make different decisions.

Hooks, each ``@njit`` (``policy.Hooks``; most policies get theirs generated, see ``kvcache``):
  on_push(A, s, now)                          block s became evictable (its push seq is set)
  on_access(A, s, now, depth, cat, hint, fill)   a hit, or the fill when ``fill`` (first); ``hint``
                                              is this access's ``Hint`` (what the caller knows)
  insert(A, s) / delete(A, s)                 add s to / take s out of the candidate order
  peek(A, now) -> int                         the candidate to evict first, -1 when there is none
  on_evict(A, s)                              s left the cache
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numba as nb
import numpy as np
from llvmlite import ir as llir
from numba import types
from numba.extending import intrinsic

from wildserve.kvcache._numba_cache import drop_stale_numba_cache

drop_stale_numba_cache(Path(__file__).parent)

# ---- arena layout --------------------------------------------------------------------------------
HDR = 48  # header words
# blocks, per-block fields, policy region offset, classes (rows of every per-class table)
H_N, H_NF, H_EXTRA, H_NCAT = 0, 1, 2, 3
H_NEVICT, H_SEQ, H_LEAF, H_NPARK = 4, 5, 6, 7  # evictable count, push counter, leaf-only, parked
H_HSIZE, H_HEAD, H_TAIL = 8, 9, 10  # heap size; head and tail of a single list
H_NTAB = 11  # per-class tables in the region
H_TAB = 16  # table t: offset in the region at word H_TAB + 2t, width (words per class) at +1
MAX_TABLES = 8
H_PAR = 32  # policy scalars live in words 32..47
NUM_PAR = HDR - H_PAR

# generic per-block fields; a policy's own fields start at NUM_GENERIC
F_FLAGS, F_PARENT, F_NCHILD, F_SEQ, F_DEPTH = 0, 1, 2, 3, 4
NUM_GENERIC = 5
GENERIC_DEFAULTS = (0, -1, 0, 0, 0)

KNOWN = 1  # the policy saw the block's fill: it holds content the policy tracks
EVICTABLE = 2  # reference count 0: the pool handed it to the policy
PARKED = 4  # evictable but not a leaf: out of the candidate order until it becomes one
# Hints: what the caller knows about an access, by name. OPT reads the next use (a request index,
# known only offline); WA and its relatives read the access history: seconds since this block's
# content was last accessed, that access's category and how many accesses of the content came
# before this one ((inf, -1, 0) when there is none). A caller passes ``AccessHints`` (one array per
# name, one entry per access; an empty array: unknown) and each hook gets that access's ``Hint``,
# with NO_HINT (NaN) in a float it was not told: "the caller knows nothing".
NO_HINT = np.nan


class AccessHints(NamedTuple):
    """Per-access hints for ``on_access_many`` and the replay; an empty array means "not known"."""

    next_use: np.ndarray  # float64: request index of the content's next use (offline only)
    age_s: np.ndarray  # float64: seconds since the content's previous access (inf: none)
    prev_category: np.ndarray  # int64: that previous access's category (-1: none)
    prior_accesses: np.ndarray  # int64: accesses of the content before this one

    @classmethod
    def make(
        cls,
        next_use: Sequence[float] | np.ndarray | None = None,
        age_s: Sequence[float] | np.ndarray | None = None,
        prev_category: Sequence[int] | np.ndarray | None = None,
        prior_accesses: Sequence[int] | np.ndarray | None = None,
    ) -> AccessHints:
        """Hints from whatever the caller knows (lists or arrays); the rest stay unknown."""

        def arr(x, dtype) -> np.ndarray:
            if x is None:
                return np.zeros(0, dtype)
            return np.ascontiguousarray(x, dtype)

        return cls(
            arr(next_use, np.float64),
            arr(age_s, np.float64),
            arr(prev_category, np.int64),
            arr(prior_accesses, np.int64),
        )


NO_HINTS = AccessHints.make()


class Hint(NamedTuple):
    """One access's hints, as ``on_access`` hooks see them."""

    next_use: float
    age_s: float
    prev_category: int
    prior_accesses: int


def float_bits(x: float) -> int:
    """The int64 word that stores float ``x`` in an arena."""
    return int(np.array([x], np.float64).view(np.int64)[0])


def new_arena(
    num_slots: int,
    slot_defaults: Sequence[int],
    tables: Sequence[tuple[int, int]],
    leaf_only: bool,
    num_classes: int = 1,
) -> np.ndarray:
    """A fresh arena: header, per-block fields (initial words ``slot_defaults``), then one table of
    ``width`` words per class for each ``(width, initial word)`` in ``tables``."""
    if len(tables) > MAX_TABLES:
        raise ValueError(f"an arena holds at most {MAX_TABLES} per-class tables")
    nf = len(slot_defaults)
    size = num_classes * sum(w for w, _ in tables)
    a = np.empty(HDR + nf * num_slots + size, np.int64)
    a[:HDR] = 0
    a[H_N], a[H_NF], a[H_EXTRA], a[H_NCAT] = num_slots, nf, HDR + nf * num_slots, num_classes
    a[H_LEAF] = int(leaf_only)
    a[H_HEAD] = a[H_TAIL] = -1
    a[H_NTAB] = len(tables)
    for f, d in enumerate(slot_defaults):
        a[HDR + f * num_slots : HDR + (f + 1) * num_slots] = d
    off = 0
    base = HDR + nf * num_slots
    for t, (width, fill) in enumerate(tables):
        a[H_TAB + 2 * t], a[H_TAB + 2 * t + 1] = off, width
        a[base + off : base + off + num_classes * width] = fill
        off += num_classes * width
    return a


def grow_arena(
    a: np.ndarray,
    num_slots: int,
    slot_defaults: Sequence[int],
    tables: Sequence[tuple[int, int]],
    num_classes: int | None = None,
) -> np.ndarray:
    """A copy of arena ``a`` with room for ``num_slots`` blocks and ``num_classes`` classes (new
    blocks and classes start from the initial words; the policy scalars are kept)."""
    n, nf, old_c = int(a[H_N]), int(a[H_NF]), int(a[H_NCAT])
    new_c = old_c if num_classes is None else num_classes
    out = new_arena(num_slots, slot_defaults, tables, bool(a[H_LEAF]), new_c)
    keep = [w for w in range(H_NCAT + 1, HDR) if not H_TAB <= w < H_TAB + 2 * MAX_TABLES]
    out[keep] = a[keep]
    for f in range(nf):
        out[HDR + f * num_slots : HDR + f * num_slots + n] = a[HDR + f * n : HDR + (f + 1) * n]
    src, dst = int(a[H_EXTRA]), int(out[H_EXTRA])
    for t, (width, _) in enumerate(tables):
        s0, d0 = src + int(a[H_TAB + 2 * t]), dst + int(out[H_TAB + 2 * t])
        m = min(old_c, new_c) * width
        out[d0 : d0 + m] = a[s0 : s0 + m]
    return out


@intrinsic
def i2f(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def f2i(typingctx, x):
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], llir.IntType(64))

    return types.int64(types.float64), codegen


@nb.njit(cache=True, inline="always")
def at(a, f, s):
    """Index of per-block field ``f`` of block ``s``."""
    return HDR + f * a[H_N] + s


def tab_index(a: np.ndarray, t: int, c: int) -> int:
    """``tab`` for Python callers (reading a policy's tables)."""
    return int(a[H_EXTRA] + a[H_TAB + 2 * t] + c * a[H_TAB + 2 * t + 1])


@nb.njit(cache=True, inline="always")
def tab(a, t, c):
    """Index of the first word of class ``c``'s row in per-class table ``t``."""
    return a[H_EXTRA] + a[H_TAB + 2 * t] + c * a[H_TAB + 2 * t + 1]


@nb.njit(cache=True, inline="always")
def getf(a, i):
    return i2f(a[i])


@nb.njit(cache=True, inline="always")
def putf(a, i, v):
    a[i] = f2i(v)


# ---- candidate orders: intrusive lists sorted by push sequence, and an indexed binary heap --------
@nb.njit(cache=True)
def list_insert(a, nxt_f, prv_f, hi, ti, s):
    """Insert s into the list whose head/tail words are ``a[hi]``/``a[ti]``, in push order."""
    n = a[H_N]
    nxt = HDR + nxt_f * n
    prv = HDR + prv_f * n
    seq = HDR + F_SEQ * n
    t = a[ti]
    if t < 0:
        a[hi] = s
        a[ti] = s
        a[nxt + s] = -1
        a[prv + s] = -1
        return
    if a[seq + t] < a[seq + s]:  # a fresh push: it goes last
        a[nxt + t] = s
        a[prv + s] = t
        a[nxt + s] = -1
        a[ti] = s
        return
    cur = a[hi]  # a re-inserted (parked) block is old: walk from the head
    while a[seq + cur] < a[seq + s]:
        cur = a[nxt + cur]
    p = a[prv + cur]
    a[prv + s] = p
    a[nxt + s] = cur
    a[prv + cur] = s
    if p < 0:
        a[hi] = s
    else:
        a[nxt + p] = s


@nb.njit(cache=True)
def list_unlink(a, nxt_f, prv_f, hi, ti, s):
    n = a[H_N]
    nxt = HDR + nxt_f * n
    prv = HDR + prv_f * n
    p = a[prv + s]
    q = a[nxt + s]
    if p < 0:
        a[hi] = q
    else:
        a[nxt + p] = q
    if q < 0:
        a[ti] = p
    else:
        a[prv + q] = p
    a[nxt + s] = -1
    a[prv + s] = -1


@nb.njit(cache=True, inline="always")
def _key_less(a, k1, k2, seq, x, y):
    ax = i2f(a[k1 + x])
    ay = i2f(a[k1 + y])
    if ax != ay:
        return ax < ay
    bx = i2f(a[k2 + x])
    by = i2f(a[k2 + y])
    if bx != by:
        return bx < by
    return a[seq + x] < a[seq + y]


@nb.njit(cache=True)
def _sift_up(a, heap, hpos, k1, k2, seq, i, x):
    """Move the hole at heap position ``i`` up while ``x`` sorts before its parent; returns where
    ``x`` belongs (not yet written)."""
    while i > 0:
        j = (i - 1) >> 1
        p = a[heap + j]
        if not _key_less(a, k1, k2, seq, x, p):
            break
        a[heap + i] = p
        a[hpos + p] = i
        i = j
    return i


@nb.njit(cache=True)
def heap_push(a, heap_f, hpos_f, k1_f, k2_f, s):
    """Add s under its key (k1, k2 as floats, then push seq); the smallest key is on top."""
    n = a[H_N]
    heap, hpos = HDR + heap_f * n, HDR + hpos_f * n
    k1, k2, seq = HDR + k1_f * n, HDR + k2_f * n, HDR + F_SEQ * n
    i = a[H_HSIZE]
    a[H_HSIZE] = i + 1
    i = _sift_up(a, heap, hpos, k1, k2, seq, i, s)
    a[heap + i] = s
    a[hpos + s] = i


@nb.njit(cache=True)
def heap_delete(a, heap_f, hpos_f, k1_f, k2_f, s):
    n = a[H_N]
    heap, hpos = HDR + heap_f * n, HDR + hpos_f * n
    k1, k2, seq = HDR + k1_f * n, HDR + k2_f * n, HDR + F_SEQ * n
    i = a[hpos + s]
    a[hpos + s] = -1
    size = a[H_HSIZE] - 1
    a[H_HSIZE] = size
    if i == size:
        return
    x = a[heap + size]  # move the last entry into the hole, then restore the order
    i = _sift_up(a, heap, hpos, k1, k2, seq, i, x)
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _key_less(a, k1, k2, seq, a[heap + c + 1], a[heap + c]):
            c += 1
        if not _key_less(a, k1, k2, seq, a[heap + c], x):
            break
        a[heap + i] = a[heap + c]
        a[hpos + a[heap + i]] = i
        i = c
    a[heap + i] = x
    a[hpos + x] = i


@nb.njit(cache=True, inline="always")
def heap_top(a, heap_f):
    return a[HDR + heap_f * a[H_N]] if a[H_HSIZE] > 0 else -1


# ---- generic drivers ------------------------------------------------------------------------------
@nb.njit(cache=True)
def _check(a, ids):
    """Every id within the arena, checked once per batch: a check (with its raise) inside the
    per-block drivers cost ~50 ns a block, most of the LRU queue's time in the simulator."""
    n = a[H_N]
    bad = False
    for s in ids:
        bad |= (s < 0) | (s >= n)
    if bad:
        raise IndexError("block id outside the policy's capacity (resize() it with the pool)")


@nb.njit(cache=True, inline="always")
def push_one(on_push, insert, a, s, now):
    a[H_SEQ] += 1
    a[at(a, F_SEQ, s)] = a[H_SEQ]
    a[at(a, F_FLAGS, s)] |= EVICTABLE
    a[H_NEVICT] += 1
    on_push(a, s, now)
    insert(a, s)


@nb.njit(cache=True, inline="always")
def remove_one(delete, a, s):
    fl = at(a, F_FLAGS, s)
    if a[fl] & PARKED:
        a[fl] &= ~PARKED
        a[H_NPARK] -= 1
    else:
        delete(a, s)
    a[fl] &= ~EVICTABLE
    a[H_NEVICT] -= 1


@nb.njit(cache=True, inline="always")
def _unpark_all(insert, a):
    """No leaf is evictable (only concurrent duplicate copies can cause this): give up the rule."""
    for s in range(a[H_N]):
        fl = at(a, F_FLAGS, s)
        if a[fl] & PARKED:
            a[fl] &= ~PARKED
            a[H_NPARK] -= 1
            insert(a, s)


@nb.njit(cache=True, inline="always")
def pop_one(peek, delete, insert, on_evict, a, now):
    leaf_only = a[H_LEAF] != 0
    while True:
        s = peek(a, now)
        if s < 0:
            if a[H_NPARK] == 0:
                raise RuntimeError("pop from an empty eviction policy")
            _unpark_all(insert, a)
            leaf_only = False
            continue
        delete(a, s)
        if leaf_only and a[at(a, F_NCHILD, s)] > 0:
            a[at(a, F_FLAGS, s)] |= PARKED
            a[H_NPARK] += 1
            continue
        break
    a[H_NEVICT] -= 1
    a[at(a, F_FLAGS, s)] = 0
    p = a[at(a, F_PARENT, s)]
    a[at(a, F_PARENT, s)] = -1
    if p >= 0:
        a[at(a, F_NCHILD, p)] -= 1
        flp = at(a, F_FLAGS, p)
        if a[at(a, F_NCHILD, p)] == 0 and a[flp] & PARKED:
            a[flp] &= ~PARKED
            a[H_NPARK] -= 1
            insert(a, p)
    if a[at(a, F_NCHILD, s)] > 0:  # a non-leaf left (only through the fallback above)
        for c in range(a[H_N]):
            if a[at(a, F_PARENT, c)] == s:
                a[at(a, F_PARENT, c)] = -1
        a[at(a, F_NCHILD, s)] = 0
    on_evict(a, s)
    return s


@nb.njit(cache=True, inline="always")
def access_one(on_access, a, s, now, depth, cat, parent, hint):
    fl = at(a, F_FLAGS, s)
    fill = (a[fl] & KNOWN) == 0
    if fill:
        a[fl] |= KNOWN
        a[at(a, F_DEPTH, s)] = depth
        if a[H_LEAF] != 0 and parent >= 0:
            a[at(a, F_PARENT, s)] = parent
            a[at(a, F_NCHILD, parent)] += 1
    on_access(a, s, now, depth, cat, hint, fill)


OP_PUSH, OP_REMOVE, OP_POP, OP_ACCESS = 0, 1, 2, 3


@nb.njit(cache=True, inline="always")
def hint_of(hints, i):
    """Access ``i``'s ``Hint``: what ``hints`` says, NO_HINT / -1 / 0 for what it leaves unknown."""
    nxt = hints.next_use[i] if len(hints.next_use) else NO_HINT
    age = hints.age_s[i] if len(hints.age_s) else NO_HINT
    cat = hints.prev_category[i] if len(hints.prev_category) else -1
    prior = hints.prior_accesses[i] if len(hints.prior_accesses) else 0
    return Hint(nxt, age, cat, prior)


@nb.njit(cache=True, inline="always")
def run_op(on_push, on_access, insert, delete, peek, on_evict,
           op, a, ids, num, now, depth0, cat, parent0, hints):  # fmt: skip
    """One batch operation of the Python API; ``_codegen`` binds each policy's hooks in a wrapper.

    (A closure would be shorter, but numba cannot cache closures over jitted functions across
    processes: their pickled form carries a per-process id.)
    """
    if op != OP_POP:
        _check(a, ids)
    if op == OP_PUSH:
        for s in ids:
            push_one(on_push, insert, a, s, now)
    elif op == OP_REMOVE:
        for s in ids:
            remove_one(delete, a, s)
    elif op == OP_POP:
        out = np.empty(num, np.int64)
        for i in range(num):
            out[i] = pop_one(peek, delete, insert, on_evict, a, now)
        return out
    else:
        prev = parent0
        for i in range(len(ids)):
            s = ids[i]
            access_one(on_access, a, s, now, depth0 + i, cat, prev, hint_of(hints, i))
            prev = s
    return np.empty(0, np.int64)


# ---- the offline replay: BlockPool's calls, in the same order, for one request at a time ----------
@nb.njit(cache=True, inline="always")
def replay(on_push, on_access, insert, delete, peek, on_evict, tracks, a,
           req_start, blocks, times, cats, hints, num_dense, capacity, log):  # fmt: skip
    """Replay requests in order on a ``capacity``-block pool; returns per-request hits and more.

    Each request matches its longest cached prefix, takes those blocks (a hit), allocates the rest
    (empty blocks first, then victims), registers them (a block whose id is cached elsewhere, after
    a hole, becomes a copy, as in the pool), and releases all of them tail first. A request longer
    than the pool uses only its first ``capacity`` blocks; the rest are misses that are not cached.
    """
    if capacity > a[H_N]:  # the replay's block ids are below capacity
        raise IndexError("block id outside the policy's capacity (resize() it with the pool)")
    num_req = len(req_start) - 1
    slot_of = np.full(num_dense, -1, np.int64)  # the block holding each id for lookups
    copy_head = np.full(num_dense, -1, np.int64)  # other blocks holding the id, last added first
    copy_next = np.full(capacity, -1, np.int64)
    dense_of = np.full(capacity, -1, np.int64)
    ref = np.zeros(capacity, np.int32)
    req_slots = np.empty(capacity, np.int64)
    release = np.empty(capacity, np.int64)
    hits = np.zeros(num_req, np.int32)
    victims = np.full(len(blocks) if log else 0, -1, np.int64)
    num_victims = 0
    num_empty_used = 0
    num_cached = 0
    max_cached = 0
    violations = 0
    for r in range(num_req):
        start = req_start[r]
        n = min(req_start[r + 1] - start, capacity)
        now = times[r]
        cat = cats[r]
        h = 0
        while h < n and slot_of[blocks[start + h]] >= 0:
            h += 1
        hits[r] = h
        prev = -1
        for d in range(h):
            s = slot_of[blocks[start + d]]
            req_slots[d] = s
            if ref[s] == 0:
                remove_one(delete, a, s)
            ref[s] += 1
            if tracks:
                access_one(on_access, a, s, now, d, cat, prev, hint_of(hints, start + d))
            prev = s
        need = n - h
        fresh = min(need, capacity - num_empty_used)
        for i in range(fresh):
            req_slots[h + i] = num_empty_used + i
        num_empty_used += fresh
        for i in range(fresh, need):
            s = pop_one(peek, delete, insert, on_evict, a, now)
            if ref[s] != 0:
                violations += 1
            if log:
                victims[num_victims] = s
            num_victims += 1
            x = dense_of[s]
            dense_of[s] = -1
            num_cached -= 1
            if slot_of[x] == s:
                c = copy_head[x]
                slot_of[x] = c  # the last copy added takes over, or the id leaves the cache
                if c >= 0:
                    copy_head[x] = copy_next[c]
            else:
                c = copy_head[x]
                if c == s:
                    copy_head[x] = copy_next[s]
                else:
                    while copy_next[c] != s:
                        c = copy_next[c]
                    copy_next[c] = copy_next[s]
            copy_next[s] = -1
            req_slots[h + i] = s
        for d in range(h, n):
            s = req_slots[d]
            ref[s] = 1
            x = blocks[start + d]
            dense_of[s] = x
            num_cached += 1
            if slot_of[x] < 0:
                slot_of[x] = s
            else:
                copy_next[s] = copy_head[x]
                copy_head[x] = s
            if tracks:
                access_one(on_access, a, s, now, d, cat, prev, hint_of(hints, start + d))
            prev = s
        if num_cached > max_cached:
            max_cached = num_cached
        k = 0
        for d in range(n - 1, -1, -1):
            s = req_slots[d]
            ref[s] -= 1
            if ref[s] == 0:
                release[k] = s
                k += 1
        for i in range(k):
            push_one(on_push, insert, a, release[i], now)
    return hits, victims[:num_victims], max_cached, violations
