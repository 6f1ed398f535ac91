"""A brute-force reference cache for the tests: the pool's request semantics in plain Python, with each
victim found by scanning every evictable block for the documented smallest key.

It shares no code with ``wildserve.kvcache`` (only the stream it replays), so agreement on hit counts
and victims checks the jitted heaps, lists, parking and WA model bookkeeping against first principles.
"""

from __future__ import annotations

import math

import numpy as np

INF = math.inf


class RefWAModel:
    """WA's bucketed sliding-window fit, written out directly."""

    def __init__(self, life_s, window_s, refit_s, min_obs, num_categories):
        self.life, self.refit, self.min_obs = life_s, refit_s, float(min_obs)
        self.k = max(1, math.ceil(window_s / refit_s))
        self.c = num_categories
        self.buckets = [[[0.0, 0.0, 0.0] for _ in range(self.c)] for _ in range(self.k)]
        self.win = [[0.0, 0.0, 0.0] for _ in range(self.c)]
        self.p = [1.0] * self.c
        self.lam = [1.0 / life_s] * self.c
        self.end = -INF
        self.b = 0

    def _refit(self):
        ta = tr = ts = 0.0
        for c in range(self.c):
            ta += self.win[c][0]
            tr += self.win[c][1]
            ts += self.win[c][2]
        if ta >= self.min_obs and ta > 0:
            p0 = min(1.0, tr / ta)
            lam0 = tr / max(ts, 1e-9) if tr > 0 else 1.0 / self.life
        else:
            p0, lam0 = 1.0, 1.0 / self.life
        for c in range(self.c):
            a, r, s = self.win[c]
            if a >= self.min_obs and a > 0:
                self.p[c] = min(1.0, r / a)
                self.lam[c] = r / max(s, 1e-9) if r > 0 else lam0
            else:
                self.p[c], self.lam[c] = p0, lam0

    def advance(self, now):
        if now < self.end:
            return
        if self.end == -INF:
            self.end = now + self.refit
            return
        steps = 0
        while now >= self.end:
            self._refit()
            self.b = (self.b + 1) % self.k
            for c in range(self.c):
                for j in range(3):
                    self.win[c][j] = self.win[c][j] - self.buckets[self.b][c][j]
                    self.buckets[self.b][c][j] = 0.0
            end = self.end + self.refit
            steps += 1
            if steps > self.k and now >= end:
                end += math.floor((now - end) / self.refit) * self.refit
            self.end = end

    def record(self, now, cat, prev_cat, reuse):
        self.advance(now)
        bucket = self.buckets[self.b]
        if prev_cat is not None:
            for target in (bucket[prev_cat], self.win[prev_cat]):
                target[1] += 1.0
                target[2] += reuse
        bucket[cat][0] += 1.0
        self.win[cat][0] += 1.0

    def priority(self, cat, age):
        p, lam = self.p[cat], self.lam[cat]
        if p <= 0.0:
            return 0.0
        horizon = 1.0 - math.exp(-lam * self.life)
        e = math.exp(-lam * age)
        den = 1.0 - p + p * e
        return horizon if den <= 0.0 else p * e * horizon / den


class RefCache:
    """Replays a ``BlockStream`` on ``capacity`` blocks; ``policy`` is lru/lfu/gdsf/opt/wa/rwa."""

    def __init__(self, policy, capacity, leaf_only=False, wa=None, num_categories=1, history=True):
        self.policy, self.cap, self.leaf_only = policy, capacity, leaf_only
        levels = 3 if policy == "rwa" else 1
        self.wa = (
            RefWAModel(num_categories=num_categories * levels, **(wa or {}))
            if policy in ("wa", "rwa")
            else None
        )
        self.wa_window = (wa or {}).get("window_s", 0.0)
        # WA's access history: block id -> (time, category) of its last access
        self.history = {} if history and self.wa is not None else None
        self.ref = [0] * capacity
        self.slot_of: dict[int, int] = {}
        self.copies: dict[int, list[int]] = {}
        self.dense_of: dict[int, int] = {}
        self.evictable: set[int] = set()
        self.next_empty = 0
        self.counter = 0
        self.seq, self.count, self.key, self.last, self.cat, self.depth, self.parent = (
            {}, {}, {}, {}, {}, {}, {},
        )  # fmt: skip
        self.known: set[int] = set()
        self.inflation = 0.0
        self.victims: list[int] = []

    # ---- policy bookkeeping ----------------------------------------------------------------
    def _access(self, s, x, now, depth, cat, parent, next_use):
        if self.policy == "lru":
            return
        fill = s not in self.known
        if fill:
            self.known.add(s)
            self.depth[s] = depth
            self.parent[s] = parent if self.leaf_only else -1
            self.count[s] = 1
        else:
            self.count[s] += 1
        if self.policy == "lfu":
            self.key[s] = (float(self.count[s]), 0.0)
        elif self.policy == "gdsf":
            self.key[s] = (self.inflation + self.count[s], 0.0)
        elif self.policy == "opt":
            self.key[s] = (-next_use, -float(self.depth[s]))
        elif self.policy in ("wa", "rwa"):
            levels = 3 if self.policy == "rwa" else 1
            prev, reuse, prior = None, 0.0, 0
            if self.history is None:  # what the cache sees: hits only
                if not fill:
                    prev, reuse = self.cat[s], max(0.0, now - self.last[s])
                    prior = min(prev % levels + 1, levels - 1)
            else:
                before = self.history.get(x)
                if before is not None and now - before[0] <= self.wa_window:
                    prior = before[2]
                    prev = before[1] * levels + min(prior - 1, levels - 1)
                    reuse = now - before[0]
                self.history[x] = (now, cat, prior + 1)
            cls = cat * levels + min(prior, levels - 1)
            self.wa.record(now, cls, prev, reuse)
            self.cat[s], self.last[s] = cls, now

    def _push(self, s, now):
        self.counter += 1
        self.seq[s] = self.counter
        self.evictable.add(s)
        if self.wa is not None:
            self.last[s] = now

    def _victim(self, now):
        cands = self.evictable
        if self.leaf_only and self.policy != "lru":
            parents = {self.parent.get(c, -1) for c in self.known}
            leaves = {s for s in cands if s not in parents}
            cands = leaves or cands
        if self.policy == "lru":
            s = min(cands, key=lambda b: self.seq[b])
        elif self.wa is not None:
            self.wa.advance(now)
            heads = {}
            for b in cands:
                c = self.cat[b]
                if c not in heads or self.seq[b] < self.seq[heads[c]]:
                    heads[c] = b
            s = min(
                heads.values(),
                key=lambda b: (
                    self.wa.priority(self.cat[b], now - self.last[b]),
                    -self.depth[b],
                    self.seq[b],
                ),
            )
        else:
            s = min(cands, key=lambda b: (*self.key[b], self.seq[b]))
            if self.policy == "gdsf":
                self.inflation = self.key[s][0]
        self.evictable.discard(s)
        self.known.discard(s)
        self.parent.pop(s, None)
        return s

    # ---- the pool ------------------------------------------------------------------------------
    def _uncache(self, s):
        x = self.dense_of.pop(s)
        copies = self.copies.get(x, [])
        if self.slot_of[x] == s:
            if copies:
                self.slot_of[x] = copies.pop()
            else:
                del self.slot_of[x]
        else:
            copies.remove(s)

    def run(self, stream, next_use=None):
        hits = []
        for r in range(stream.num_requests):
            a = int(stream.req_start[r])
            n = min(int(stream.req_start[r + 1]) - a, self.cap)
            ids = [int(x) for x in stream.blocks[a : a + n]]
            now, cat = float(stream.times[r]), int(stream.cats[r])
            h = 0
            while h < n and ids[h] in self.slot_of:
                h += 1
            hits.append(h)
            slots = []
            prev = -1
            for d in range(h):
                s = self.slot_of[ids[d]]
                if self.ref[s] == 0:
                    self.evictable.discard(s)
                self.ref[s] += 1
                self._access(s, ids[d], now, d, cat, prev, self._hint(next_use, a + d))
                slots.append(s)
                prev = s
            for _ in range(n - h):
                if self.next_empty < self.cap:
                    s = self.next_empty
                    self.next_empty += 1
                else:
                    s = self._victim(now)
                    assert self.ref[s] == 0, "evicted a block in use"
                    self.victims.append(s)
                    self._uncache(s)
                slots.append(s)
            for d in range(h, n):
                s = slots[d]
                self.ref[s] = 1
                self.dense_of[s] = ids[d]
                if ids[d] in self.slot_of:
                    self.copies.setdefault(ids[d], []).append(s)
                else:
                    self.slot_of[ids[d]] = s
                self._access(s, ids[d], now, d, cat, prev, self._hint(next_use, a + d))
                prev = s
            for s in reversed(slots):
                self.ref[s] -= 1
                if self.ref[s] == 0:
                    self._push(s, now)
        return np.asarray(hits)

    @staticmethod
    def _hint(next_use, i):
        return INF if next_use is None else float(next_use[i])


def brute_next_use(stream, capacity):
    """Request index of each access's block's next replayed access, by scanning forward."""
    out = np.full(stream.num_accesses, INF)
    reqs = []
    for r in range(stream.num_requests):
        a = int(stream.req_start[r])
        n = min(int(stream.req_start[r + 1]) - a, capacity)
        reqs.append((a, [int(x) for x in stream.blocks[a : a + n]]))
    for r, (a, ids) in enumerate(reqs):
        for d, x in enumerate(ids):
            for r2 in range(r + 1, len(reqs)):
                if x in reqs[r2][1]:
                    out[a + d] = r2
                    break
    return out
