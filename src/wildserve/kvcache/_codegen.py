"""Per-policy jitted functions made from shared templates, so a policy's source is its key alone.

numba compiles a function once per set of *global* functions it calls, and caches it on disk keyed
by its file, qualified name and bytecode. A closure over another jitted function cannot be cached
across processes (its pickled form carries a per-process id), so each policy gets *copies* of the
template functions below (and of its base class's hook templates) whose globals name that policy's
own hooks, with the file and qualified name of the policy's class. Each copy is therefore cached
like a hand-written function next to the policy's source, and numba's source stamp on that file
invalidates it when the policy is edited. The name also carries a digest of this package's sources,
so a policy defined outside the package is recompiled when a template it was made from changes.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numba as nb

from wildserve.kvcache import _core, _numba_cache

PACKAGE_DIGEST = _numba_cache.source_digest(Path(__file__).parent)[:10]


def specialize(template: Any, owner: type, name: str, inline: bool = False, **bind: Any) -> Any:
    """A jitted copy of ``template`` (a plain or jitted function) whose global ``NAME``s are ``bind``.

    The copy belongs to ``owner``: its qualified name is ``Owner.name`` and numba caches it beside
    the file that defines ``owner``.
    """
    py = getattr(template, "py_func", template)
    missing = sorted(set(bind) - set(py.__code__.co_names))
    if missing:
        raise TypeError(f"{py.__name__} has no global {', '.join(missing)} to bind")
    module = sys.modules[owner.__module__]
    qualname = f"{owner.__qualname__}.{name}_{PACKAGE_DIGEST}"
    code = py.__code__.replace(
        co_filename=getattr(module, "__file__", None) or py.__code__.co_filename,
        co_name=name,
        co_qualname=qualname,
    )
    fn = types.FunctionType(code, {**py.__globals__, **bind}, name, py.__defaults__)
    fn.__qualname__ = qualname
    fn.__module__ = owner.__module__
    fn.__doc__ = py.__doc__
    return nb.njit(cache=True, inline="always" if inline else "never")(fn)


# ---- the two kernels every policy gets: its hooks bound into the shared drivers --------------------
# (ON_PUSH, ON_ACCESS, INSERT, DELETE, PEEK, ON_EVICT and TRACKS are bound per policy)
def ops_template(op, a, ids, num, now, depth0, cat, parent0, hints):
    """One batch operation of the per-operation API (push, remove, pop or access)."""
    return _core.run_op(ON_PUSH, ON_ACCESS, INSERT, DELETE, PEEK, ON_EVICT,  # noqa: F821
                        op, a, ids, num, now, depth0, cat, parent0, hints)  # fmt: skip


def replay_template(a, req_start, blocks, times, cats, hints, num_dense, capacity, log):
    """The offline replay (``kvcache.replay``) with this policy's hooks."""
    return _core.replay(ON_PUSH, ON_ACCESS, INSERT, DELETE, PEEK, ON_EVICT, TRACKS,  # noqa: F821
                        a, req_start, blocks, times, cats, hints, num_dense, capacity, log)  # fmt: skip


def make_kernels(owner: type, hooks: tuple, tracks: bool) -> tuple[Any, Any]:
    """(ops, replay) for a policy class from its six hooks (``policy.Hooks`` order)."""
    bind = dict(zip(("ON_PUSH", "ON_ACCESS", "INSERT", "DELETE", "PEEK", "ON_EVICT"), hooks,
                    strict=True))  # fmt: skip
    ops = specialize(ops_template, owner, "ops", **bind)
    replay = specialize(replay_template, owner, "replay", TRACKS=bool(tracks), **bind)
    return ops, replay
