"""A real, small RL loop: GRPO with LoRA, rollouts from the lossless speculative generation loop.

Each step samples ``group_size`` responses for ``prompts_per_step`` problems with the history
drafter (fed by every earlier step's rollouts), scores them with an exact-answer reward, and takes
one policy-gradient step: REINFORCE with the group-mean baseline divided by the group std (GRPO;
one update per batch, so the PPO ratio is 1 and clipping never acts), token-level mean as in DAPO,
no KL term. Because verification is lossless, speculation changes how fast rollouts come, never
which rollouts come, so training is what plain sampling would give.

Every step also measures each drafter's acceptance on that step's samples (``acceptance``): at the
training temperature on the rollouts, and at ``eval_temperature`` on a few extra samples. Those
per-request traces are what the rollout simulator replays.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from wildserve.errors import ConfigError
from wildserve.io import atomic_write, atomic_write_bytes, atomic_write_json
from wildserve.rollout.acceptance import (
    QuantizedDrafter,
    chain_tokens_per_forward,
    overlap,
    replay_depths,
    walk_tokens_per_forward,
)
from wildserve.rollout.config import SamplingConfig, SpecConfig, TrainConfig
from wildserve.rollout.drafters import DRAFTERS, Drafter, DrafterContext
from wildserve.rollout.generation import generate
from wildserve.rollout.planner import DraftPlanner
from wildserve.rollout.sampling import sampling_probs
from wildserve.rollout.state import SeqState, SeqStatus

log = logging.getLogger(__name__)

LOOKUP_DRAFTERS = ("history", "ngram")  # measured by exact replay
MODEL_DRAFTERS = ("quant3", "early-exit")  # measured by overlap with the policy


@dataclass(slots=True)
class Task:
    """Tokenized prompts and a reward on (problem index, response tokens)."""

    prompts: list[list[int]]
    reward: Callable[[int, list[int]], float]
    stop_ids: frozenset[int]


@dataclass(slots=True)
class StepRecord:
    """What one RL step did and measured (one row of ``metrics.json``)."""

    step: int
    epoch: int
    problems: list[int]
    mean_reward: float
    mean_entropy: float  # policy entropy per response token, nats, at the rollout temperature
    mean_len: float
    frac_truncated: float
    loss: float
    live_history: dict[str, float]  # the engine's own figures for its history drafter
    # temperature -> drafter -> mean tokens per target forward at k = draft_len (replay / overlap)
    tokens_per_forward: dict[str, dict[str, float]]
    cpu_s: dict[str, float]


def _gen(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, step, salt]).generate_state(1)[0])
    )


class GRPOTrainer:
    """Owns the LoRA policy, its optimizer, the history drafters and the output folder."""

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        cfg: TrainConfig,
        out: Path | None = None,
    ) -> None:
        from peft import LoraConfig, get_peft_model

        if model.config.num_hidden_layers <= cfg.early_exit_layers:
            raise ConfigError(
                f"early_exit_layers ({cfg.early_exit_layers}) must be below the model's "
                f"{model.config.num_hidden_layers} layers"
            )
        self.cfg, self.task, self.out = cfg, task, out
        self.quant = (
            QuantizedDrafter.of(model, cfg.quant_bits, cfg.quant_group) if cfg.quant_bits else None
        )
        torch.manual_seed(cfg.seed)  # peft initializes LoRA A from torch's global RNG
        lora = LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=cfg.lora_alpha,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            lora_dropout=0.0,
        )
        self.peft = get_peft_model(model, lora)
        self.policy = self.peft.base_model.model  # the causal LM with LoRA layers injected in place
        self.policy.eval()  # no dropout anywhere; gradients still flow in train_step
        params = [p for p in self.policy.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
        self.sampling = SamplingConfig(cfg.temperature, 1.0, cfg.max_new_tokens)
        self.eval_sampling = SamplingConfig(cfg.eval_temperature, 1.0, cfg.max_new_tokens)
        self.spec = SpecConfig(
            num_draft_tokens=cfg.draft_len, adaptive_draft_len=cfg.adaptive_draft_len
        )
        self.live = self._drafter("suffix", self.sampling)  # fed by each step's rollouts
        # replay indexes hold only earlier steps (the live one also sees a step's finished siblings)
        self.replay = {
            "T1": self._drafter("suffix", self.sampling),
            "T07": self._drafter("suffix", self.eval_sampling),
        }
        self.records: list[StepRecord] = []
        self.step = 0
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            self._resume()

    def _drafter(self, name: str, sampling: SamplingConfig) -> Drafter:
        spec = SpecConfig(num_draft_tokens=self.cfg.measure_budget)
        return DRAFTERS.get(name)(DrafterContext(sampling, spec, torch.Generator()))

    # ---- the loop -------------------------------------------------------------------------
    def run(
        self, num_steps: int | None = None, on_step: Callable[[StepRecord], None] | None = None
    ):
        """Train until ``cfg.num_steps`` (or ``num_steps`` more); checkpoints after every step."""
        end = (
            self.cfg.num_steps
            if num_steps is None
            else min(self.cfg.num_steps, self.step + num_steps)
        )
        while self.step < end:
            record = self.train_step()
            if on_step is not None:
                on_step(record)
        return self.records

    def problems_of(self, step: int) -> list[int]:
        """Problem indices of a step: a seeded permutation per epoch, sliced."""
        epoch, pos = divmod(step, self.cfg.steps_per_epoch)
        order = np.random.default_rng([self.cfg.seed, epoch]).permutation(len(self.task.prompts))
        n = self.cfg.prompts_per_step
        return [int(i) for i in order[pos * n : (pos + 1) * n]]

    def train_step(self) -> StepRecord:
        cfg, step = self.cfg, self.step
        problems = self.problems_of(step)
        cpu: dict[str, float] = {}
        t0 = time.process_time()
        seqs, live = self._rollout(
            problems, cfg.group_size, self.sampling, _gen(cfg.seed, step, 0), self.live
        )
        cpu["rollout"] = time.process_time() - t0
        rewards = np.array([self.task.reward(s.prompt_id, s.output) for s in seqs])
        groups = rewards.reshape(len(problems), cfg.group_size)
        adv = (groups - groups.mean(1, keepdims=True)) / (groups.std(1, keepdims=True) + 1e-4)
        t0 = time.process_time()
        measured_rows = set(range(min(cfg.measure_model_rows, len(seqs))))
        loss, entropy, betas = self._policy_step(
            seqs, adv.reshape(-1), self.sampling, measured_rows
        )
        cpu["train"] = time.process_time() - t0
        t0 = time.process_time()
        traces = {"T1": self._traces(seqs, betas, "T1")}
        evals: list[SeqState] = []
        if cfg.eval_samples:
            per = max(1, cfg.eval_samples // len(problems))
            evals, _ = self._rollout(
                problems, per, self.eval_sampling, _gen(cfg.seed, step, 1), None
            )
            with torch.no_grad():
                _, _, ebetas = self._policy_step(
                    evals, None, self.eval_sampling, set(range(len(evals)))
                )
            traces["T07"] = self._traces(evals, ebetas, "T07")
            self._feed(self.replay["T07"], evals)
        self._feed(self.replay["T1"], seqs)
        self._feed(self.replay["T07"], seqs)
        cpu["measure"] = time.process_time() - t0
        record = StepRecord(
            step=step + 1,
            epoch=step // cfg.steps_per_epoch + 1,
            problems=problems,
            mean_reward=float(rewards.mean()),
            mean_entropy=entropy,
            mean_len=float(np.mean([len(s.output) for s in seqs])),
            frac_truncated=float(np.mean([s.status == SeqStatus.FINISHED_LENGTH for s in seqs])),
            loss=loss,
            live_history=live,
            tokens_per_forward={t: _summarize(tr, cfg.draft_len) for t, tr in traces.items()},
            cpu_s={k: round(v, 2) for k, v in cpu.items()},
        )
        self.records.append(record)
        self.step += 1
        if self.out is not None:
            self._save(record, seqs, evals, traces)
        return record

    def _rollout(
        self,
        problems: Sequence[int],
        per_problem: int,
        sampling: SamplingConfig,
        gen: torch.Generator,
        history: Drafter | None,
    ) -> tuple[list[SeqState], dict[str, float]]:
        """``per_problem`` responses per problem, in problem order; ``prompt_id`` is the problem
        index (the history drafter's key). Returns the engine's figures for its history drafter."""
        seqs = [
            SeqState(i * per_problem + j, p, list(self.task.prompts[p]))
            for i, p in enumerate(problems)
            for j in range(per_problem)
        ]
        planner = DraftPlanner({"history": history} if history is not None else {}, self.spec)
        stats = generate(self.policy, seqs, sampling, planner, gen, self.task.stop_ids)
        h = stats.by_drafter.get("history")
        return seqs, {
            "row_steps": h.num_row_steps if h else 0,
            "tokens_per_forward": round(h.tokens_per_forward, 4) if h else 0.0,
            "acceptance": round(h.acceptance_rate, 4) if h else 0.0,
            "overall_tokens_per_forward": round(stats.tokens_per_forward, 4),
        }

    @staticmethod
    def _feed(drafter: Drafter, seqs: Sequence[SeqState]) -> None:
        drafter.finish(seqs)

    def _policy_step(
        self,
        seqs: Sequence[SeqState],
        advantages: np.ndarray | None,
        sampling: SamplingConfig,
        measured_rows: set[int],
    ) -> tuple[float, float, dict[str, dict[int, np.ndarray]]]:
        """One pass over the responses in micro-batches: the GRPO gradient (when ``advantages``),
        mean entropy, and the model drafters' overlap with the policy on ``measured_rows``."""
        cfg = self.cfg
        num_tokens = sum(len(s.output) for s in seqs)
        betas: dict[str, dict[int, np.ndarray]] = {name: {} for name in MODEL_DRAFTERS}
        total_loss, ent_sum = 0.0, 0.0
        if self.quant is not None and measured_rows:
            self.quant.refresh(self.policy)
        for lo in range(0, len(seqs), cfg.micro_batch):
            rows = list(range(lo, min(lo + cfg.micro_batch, len(seqs))))
            ids, mask, pos = _pack([seqs[r] for r in rows])
            out = self.policy.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            hidden = out.last_hidden_state[pos[:, 0], pos[:, 1]]
            logits = self.policy.lm_head(hidden).float()
            targets = ids[pos[:, 0], pos[:, 1] + 1]
            logp_all = torch.log_softmax(logits / sampling.temperature, -1)
            logp = logp_all.gather(-1, targets[:, None]).squeeze(-1)
            with torch.no_grad():
                ent_sum += float(-(logp_all.exp() * logp_all).sum(-1).sum())
            if advantages is not None:
                row_adv = torch.tensor(advantages[rows], dtype=torch.float32)[pos[:, 0]]
                loss = -(row_adv * logp).sum() / max(num_tokens, 1)
                loss.backward()
                total_loss += float(loss.detach())
            with torch.no_grad():
                p = sampling_probs(logits.detach(), sampling)
                ee = out.hidden_states[cfg.early_exit_layers][pos[:, 0], pos[:, 1]]
                drafts = {"early-exit": self.policy.lm_head(self.policy.model.norm(ee.detach()))}
                if self.quant is not None and any(r in measured_rows for r in rows):
                    qh = self.quant.model.model(
                        input_ids=ids, attention_mask=mask
                    ).last_hidden_state
                    drafts["quant3"] = self.quant.model.lm_head(qh[pos[:, 0], pos[:, 1]])
                for name, q_logits in drafts.items():
                    beta = overlap(p, sampling_probs(q_logits.float(), sampling)).numpy()
                    for b, r in enumerate(rows):
                        if r in measured_rows:
                            betas[name][r] = beta[(pos[:, 0] == b).numpy()].astype(np.float32)
            del out, logits, logp_all
        if advantages is not None:
            params = [p for p in self.policy.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return total_loss, ent_sum / max(num_tokens, 1), betas

    def _traces(
        self, seqs: Sequence[SeqState], betas: dict[str, dict[int, np.ndarray]], temp: str
    ) -> list[dict[str, Any]]:
        """Per-request acceptance trace of every drafter (see ``acceptance``)."""
        k = self.cfg.measure_budget
        lookups = {"history": self.replay[temp], "ngram": self._drafter("ngram", self.sampling)}
        out = []
        for r, s in enumerate(seqs):
            problem = s.prompt_id
            trace: dict[str, Any] = {"problem": problem, "len": len(s.output)}
            for name, drafter in lookups.items():
                depths = replay_depths(drafter, s.seq_id, problem, s.prompt, s.output, k)
                trace[name] = depths.tolist()
            lookups["ngram"].finish([s])
            for name in MODEL_DRAFTERS:
                if r in betas.get(name, {}):
                    trace[name] = [round(float(b), 4) for b in betas[name][r]]
            out.append(trace)
        return out

    # ---- persistence ----------------------------------------------------------------------
    def _save(
        self,
        record: StepRecord,
        seqs: Sequence[SeqState],
        evals: Sequence[SeqState],
        traces: dict[str, Any],
    ) -> None:
        assert self.out is not None
        body = {
            "record": asdict(record),
            "responses": [{"problem": s.prompt_id, "output": s.output} for s in seqs],
            "eval_responses": [{"problem": s.prompt_id, "output": s.output} for s in evals],
            "traces": traces,
        }
        atomic_write_bytes(
            self.out / "steps" / f"step_{record.step:04d}.json.gz",
            gzip.compress(orjson.dumps(body)),
        )
        state = {
            "step": self.step,
            "lora": {k: v for k, v in self.policy.state_dict().items() if "lora_" in k},
            "optimizer": self.optimizer.state_dict(),
        }
        atomic_write(self.out / "checkpoint.pt", lambda tmp: torch.save(state, tmp))
        atomic_write_json(
            self.out / "metrics.json",
            {"config": asdict(self.cfg), "steps": [asdict(r) for r in self.records]},
        )

    def _resume(self) -> None:
        """Continue from ``checkpoint.pt``: LoRA weights, optimizer, and the history indexes rebuilt
        from the saved rollouts of every finished step (sampling is seeded per step)."""
        assert self.out is not None
        ckpt = self.out / "checkpoint.pt"
        if not ckpt.exists():
            return
        state = torch.load(ckpt, weights_only=True)
        missing = self.policy.load_state_dict(state["lora"], strict=False)
        if missing.unexpected_keys:
            raise ConfigError(f"{ckpt}: unexpected LoRA keys {missing.unexpected_keys[:3]}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        for s in range(1, self.step + 1):
            body = orjson.loads(
                gzip.decompress((self.out / "steps" / f"step_{s:04d}.json.gz").read_bytes())
            )
            self.records.append(StepRecord(**body["record"]))
            rows, evals = (
                [
                    SeqState(i, r["problem"], list(self.task.prompts[r["problem"]]), r["output"])
                    for i, r in enumerate(body[key])
                ]
                for key in ("responses", "eval_responses")
            )
            self.live.finish(rows)
            self.replay["T1"].finish(rows)
            self.replay["T07"].finish([*evals, *rows])
        log.info("resumed %s at step %d", self.out, self.step)


def _pack(seqs: Sequence[SeqState]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded prompt+response ids, mask, and (row, position) of every input whose next token
    is a response token."""
    width = max(len(s.prompt) + len(s.output) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    pos = []
    for b, s in enumerate(seqs):
        tokens = s.prompt + s.output
        ids[b, : len(tokens)] = torch.tensor(tokens)
        mask[b, : len(tokens)] = 1
        pos.extend((b, len(s.prompt) - 1 + j) for j in range(len(s.output)))
    return ids, mask, torch.tensor(pos, dtype=torch.long).reshape(-1, 2)


def _summarize(traces: Sequence[dict[str, Any]], k: int) -> dict[str, float]:
    """Mean over requests of tokens per target forward at draft length k, per drafter."""
    out: dict[str, float] = {}
    for name in (*LOOKUP_DRAFTERS, *MODEL_DRAFTERS):
        values = []
        for tr in traces:
            if name not in tr or not tr["len"]:
                continue
            if name in LOOKUP_DRAFTERS:
                values.append(walk_tokens_per_forward(np.asarray(tr[name]), k))
            else:
                values.append(chain_tokens_per_forward(np.asarray(tr[name]), k))
        if values:
            out[name] = round(float(np.mean(values)), 4)
    return out


def word_problem_task(loaded: Any, problems: Sequence[Any]) -> Task:
    """The shipped word problems as an RL task: chat prompts, reward 1 for the exact answer."""
    from wildserve.rollout.prompts import reward

    answers = [p.answer for p in problems]
    return Task(
        prompts=[loaded.encode_chat(p.text) for p in problems],
        reward=lambda i, out: reward(loaded.decode(out), answers[i]),
        stop_ids=loaded.stop_ids,
    )


def plot_run(out: Path) -> Path:
    """reward, entropy and each drafter's tokens per target forward per step, from metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wildserve.io import save_figure

    steps = orjson.loads((out / "metrics.json").read_bytes())["steps"]
    x = [r["step"] for r in steps]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].plot(x, [r["mean_reward"] for r in steps], marker="o")
    axes[0].set(title="mean reward (exact answer)", xlabel="RL step")
    axes[1].plot(x, [r["mean_entropy"] for r in steps], marker="o", color="tab:red")
    axes[1].set(title="policy entropy per token (nats)", xlabel="RL step")
    for temp, style in (("T1", "-"), ("T07", "--")):
        for name in (*LOOKUP_DRAFTERS, *MODEL_DRAFTERS):
            y = [r["tokens_per_forward"].get(temp, {}).get(name) for r in steps]
            if any(v is not None for v in y):
                axes[2].plot(x, y, style, marker=".", label=f"{name} {temp}")
    axes[2].set(title="tokens per target forward (k = draft_len)", xlabel="RL step")
    axes[2].legend(fontsize=7)
    return save_figure(fig, out / "training.png")
