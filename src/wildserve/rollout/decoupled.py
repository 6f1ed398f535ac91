"""Decoupled drafting: a model drafter runs ahead of the verifier in a background thread.

The thread extends, one batched draft step at a time, a chain of up to ``window`` drafted tokens
beyond each sequence's committed tokens. The verifier takes whatever part of the chain is ready
(so drafting overlaps verification) instead of waiting for k draft steps. After each step the
engine reports the committed tokens (``sync``): a chain whose prefix was confirmed keeps its
remaining drafts; a chain built on a prefix that verification rejected is discarded, and so is any
token the thread was computing on it. Each kept draft was drawn from q given exactly the committed
prefix, so verification stays lossless.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from wildserve.rollout.drafters.base import Draft, Drafter, SeqView


@dataclass(slots=True)
class _Chain:
    seq_id: int
    prompt_id: int
    prompt: list[int]
    output: list[int]  # committed response tokens when the chain was last synced
    drafts: list[int] = field(default_factory=list)
    q: list[torch.Tensor | None] = field(default_factory=list)
    version: int = 0  # bumped when the chain is discarded, so in-flight drafts are dropped

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


@dataclass(slots=True)
class _Ahead:
    """The view the inner drafter continues: committed tokens plus the chain so far."""

    seq_id: int
    prompt_id: int
    prompt: list[int]
    output: list[int]

    @property
    def tokens(self) -> list[int]:
        return self.prompt + self.output


class DecoupledDrafter(Drafter):
    """Wraps a model drafter; from the planner's side it is a free lookup of ready drafts."""

    uses_model = False  # drafting time is off the critical path; proposals have their true length
    has_late_drafts = True

    def __init__(self, inner: Drafter, window: int) -> None:
        self.inner = inner
        self.name = f"{inner.name}@ahead"  # type: ignore[misc]
        self.window = window
        self._cond = threading.Condition()
        self._inner_lock = threading.Lock()  # the thread holds it while drafting
        self._chains: dict[int, _Chain] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self.num_discarded = 0  # drafted tokens thrown away because their prefix was rejected

    def begin(self, seqs: Sequence[SeqView]) -> None:
        self.close()
        with self._inner_lock:
            self.inner.begin(seqs)
        with self._cond:
            self._chains = {
                s.seq_id: _Chain(s.seq_id, s.prompt_id, list(s.prompt), list(s.output))
                for s in seqs
            }
            self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"drafter-{self.name}", daemon=True)
        self._thread.start()

    def propose(self, seqs: Sequence[SeqView], k: int) -> list[Draft]:
        out = []
        with self._cond:
            for s in seqs:
                chain = self._sync_one(s)
                tokens = chain.drafts[:k]
                qs = chain.q[: len(tokens)]
                q = None if not tokens or qs[0] is None else torch.stack(qs)
                out.append(Draft(list(tokens), q))
        return out

    def late(self, seqs: Sequence[SeqView], num_drafted: Sequence[int]) -> list[Draft]:
        out = []
        with self._cond:
            for s, n in zip(seqs, num_drafted, strict=True):
                chain = self._sync_one(s)
                tokens = chain.drafts[n : n + 1]
                q = chain.q[n] if tokens else None
                out.append(Draft(list(tokens), None if q is None else q[None]))
        return out

    def sync(self, seqs: Sequence[SeqView]) -> None:
        with self._cond:
            for s in seqs:
                self._sync_one(s)
            self._cond.notify_all()

    def finish(self, seqs: Sequence[SeqView]) -> None:
        with self._cond:
            for s in seqs:
                self._chains.pop(s.seq_id, None)
        with self._inner_lock:
            self.inner.finish(seqs)

    def close(self) -> None:
        """Stop the background thread (idempotent)."""
        if self._thread is None:
            return
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join()
        self._thread = None

    def _sync_one(self, s: SeqView) -> _Chain:
        """Move the chain onto the committed tokens: keep drafts that were confirmed, else discard."""
        chain = self._chains[s.seq_id]
        new = s.output[len(chain.output) :]
        confirmed = (
            s.output[: len(chain.output)] == chain.output and chain.drafts[: len(new)] == new
        )
        if confirmed:
            chain.drafts, chain.q = chain.drafts[len(new) :], chain.q[len(new) :]
        else:
            self.num_discarded += len(chain.drafts)
            chain.drafts, chain.q = [], []
            chain.version += 1
        chain.output = list(s.output)
        return chain

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._work():
                    self._cond.wait(timeout=0.05)
                if self._stop:
                    return
                todo = self._work()
                views = [_Ahead(c.seq_id, c.prompt_id, c.prompt, c.output + c.drafts) for c in todo]
                versions = [c.version for c in todo]
            with self._inner_lock:
                live = [v for v in views if v.seq_id in self._chains]
                drafts = self.inner.propose(live, 1) if live else []
            with self._cond:
                by_id = {v.seq_id: d for v, d in zip(live, drafts, strict=True)}
                for view, version in zip(views, versions, strict=True):
                    chain = self._chains.get(view.seq_id)
                    d = by_id.get(view.seq_id)
                    if chain is None or d is None or not d.tokens:
                        continue
                    ahead = chain.output + chain.drafts
                    if chain.version != version or ahead != view.output:
                        # the chain moved meanwhile: keep the token only if it was built on what the
                        # chain now is; a draft for a position already decided is never needed
                        self.num_discarded += 1
                        continue
                    chain.drafts.append(d.tokens[0])
                    chain.q.append(None if d.q is None else d.q[0])

    def _work(self) -> list[_Chain]:
        return [c for c in self._chains.values() if len(c.drafts) < self.window]
