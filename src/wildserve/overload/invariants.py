"""Checks that hold at every step of a KunServe run (used by tests and ``check_invariants``).

- every GPU's weights + KV region + reserve fit in its usable memory;
- every pipeline group holds at least one copy of every layer;
- an instance that serves no requests of its own (a non-leader member) holds no KV blocks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wildserve.overload.kunserve import KunServeController


class InvariantError(AssertionError):
    """A KunServe invariant does not hold."""


def check_cluster(ctl: KunServeController) -> None:
    """Raise ``InvariantError`` naming the first instance or group that breaks an invariant."""
    engines = ctl.engines
    for i, e in enumerate(engines):
        g = ctl.group_of[i]
        mem = e.memory
        serving = g.leader if g is not None and g.is_pipeline else i
        blocks = engines[serving].num_kv_blocks
        if not mem.fits(blocks):
            raise InvariantError(
                f"instance {i}: {mem.param_bytes} B weights + {blocks} x {mem.block_bytes} B KV + "
                f"{mem.reserve_bytes} B reserve > {mem.usable_bytes} B"
            )
        if serving != i and (e.num_used_blocks or e.has_work):
            raise InvariantError(f"instance {i} serves requests while a member of {g.members}")
    for g in ctl.groups:
        if not g.is_pipeline:
            continue  # not dropped yet, or already split (its members are checked above)
        covered = sorted(engines[m].memory.layers for m in g.members)
        reach = 0
        for lo, hi in covered:
            if lo > reach:
                break
            reach = max(reach, hi)
        if reach < ctl.num_layers:
            raise InvariantError(f"group {g.members} misses layers from {reach}: {covered}")
