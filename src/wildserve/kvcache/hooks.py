"""Jitted hooks that several policies share (``policy.Hooks``); a policy's own live in its file.

The no-op hooks fill the slots a policy does not need. The list hooks keep every candidate in one
intrusive list in push order (vLLM's free-block queue) through two per-block fields, which must be
the policy's first two (``LIST_NEXT``, ``LIST_PREV``).
"""

from __future__ import annotations

import numba as nb

from wildserve.kvcache import _core

LIST_NEXT, LIST_PREV = _core.NUM_GENERIC, _core.NUM_GENERIC + 1


@nb.njit(cache=True)
def nop_push(a, s, now):
    pass


@nb.njit(cache=True)
def nop_access(a, s, now, depth, cat, hint, fill):
    pass


@nb.njit(cache=True)
def nop_evict(a, s):
    pass


@nb.njit(cache=True)
def list_insert(a, s):
    _core.list_insert(a, LIST_NEXT, LIST_PREV, _core.H_HEAD, _core.H_TAIL, s)


@nb.njit(cache=True)
def list_delete(a, s):
    _core.list_unlink(a, LIST_NEXT, LIST_PREV, _core.H_HEAD, _core.H_TAIL, s)


@nb.njit(cache=True)
def list_peek(a, now):
    return a[_core.H_HEAD]
