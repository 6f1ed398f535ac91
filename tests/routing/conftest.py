from __future__ import annotations

from wildserve.routing import InstanceView, RouteRequest


def req(prompt: int = 160, blocks: int = 10, rid: int = 0) -> RouteRequest:
    return RouteRequest(
        request_id=rid, prompt_tokens=prompt, block_hashes=list(range(1, blocks + 1)), block_size=16
    )


def view(
    i: int,
    *,
    run: int = 0,
    wait: int = 0,
    queued: int = 0,
    match: int = 0,
    usage: float = 0.0,
    blocks: int = 1000,
) -> InstanceView:
    return InstanceView(
        instance_id=i,
        num_running=run,
        num_waiting=wait,
        queued_prefill_tokens=queued,
        kv_usage=usage,
        num_kv_blocks=blocks,
        block_size=16,
        match_blocks=lambda hs, m=match: min(m, len(hs)),
    )
