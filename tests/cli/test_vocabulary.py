"""One vocabulary across commands (README, "Command line"): the real command tree is walked, so a new
command or option that spells a shared thing differently fails here.

- ``--out DIR`` is a run's folder on every command that writes one (every experiment);
  ``--output-json FILE`` where only a JSON is written; the old spellings (``--report``,
  ``--plot-dir``, ``--output-dir``) are hidden aliases, never shown in ``--help``.
- every command that reads a trace takes ``--trace SPEC`` and ``-o/--option KEY=VALUE``;
- every command with randomness takes ``--seed`` (a sweep over seeds: ``--seeds``);
- ``--jobs`` is the number of worker processes of a sweep, the same option on every experiment.
"""

from __future__ import annotations

import pytest

from wildserve.cli import _command


def _commands() -> dict[str, object]:
    out: dict[str, object] = {}

    def walk(cmd, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
        elif path:
            out[" ".join(path)] = cmd

    walk(_command(), ())
    return out


COMMANDS = _commands()
EXPERIMENTS = sorted(c for c in COMMANDS if c.startswith("experiment "))
TRACE_READERS = ("simulate", "replay", "trace info", "cache analyze", "experiment lmetric",
                 "experiment kunserve", "experiment kvcache")  # fmt: skip
RANDOM = ("simulate", "replay", "rollout", "rollout-train", "experiment kunserve",
          "experiment omega", "vsearch build", "vsearch train")  # fmt: skip
# --jobs absent, with the reason: omega times single-threaded searches in one process (its faiss
# build threads are --threads); nothing in it is a sweep of independent runs to spread over workers
NO_JOBS = {"experiment omega": "one timed process; faiss threads are --threads"}
# -o absent, with the reason (to be closed by the command's owner)
NO_READER_OPTIONS: dict[str, str] = {}  # command -> why it reads a trace without -o
OLD_SPELLINGS = ("--report", "--plot-dir", "--output-dir", "--dataset", "--limit")


def _visible(command) -> dict[str, object]:
    """Flag -> click parameter, for every option shown in ``--help``."""
    out = {}
    for p in command.params:
        if getattr(p, "hidden", False) or not hasattr(p, "opts"):
            continue
        for flag in (*p.opts, *getattr(p, "secondary_opts", ())):
            out[flag] = p
    return out


def _all_flags(command) -> set[str]:
    return {f for p in command.params for f in (*getattr(p, "opts", ()),)}


def test_the_walk_finds_every_experiment():
    assert EXPERIMENTS == ["experiment kunserve", "experiment kvcache", "experiment lmetric",
                           "experiment omega"]  # fmt: skip
    for name in (*TRACE_READERS, *RANDOM):
        assert name in COMMANDS, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_old_output_spellings_are_hidden(name):
    shown = set(_visible(COMMANDS[name]))
    assert not shown & set(OLD_SPELLINGS), (name, shown & set(OLD_SPELLINGS))


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_writes_a_run_folder(name):
    shown = _visible(COMMANDS[name])
    assert "--out" in shown, name
    assert "folder" in (shown["--out"].help or ""), shown["--out"].help


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_jobs_means_worker_processes_on_every_experiment(name):
    shown = _visible(COMMANDS[name])
    if name in NO_JOBS:
        assert "--jobs" not in shown, f"{name}: --jobs would not mean worker processes here"
        return
    assert "--jobs" in shown, name
    assert shown["--jobs"].help.startswith("worker processes"), shown["--jobs"].help
    assert {"--executor", "--ray-address"} <= set(shown), name


def test_jobs_is_one_option_wherever_it_is_shown():
    helps = {n: _visible(c)["--jobs"].help for n, c in COMMANDS.items() if "--jobs" in _visible(c)}
    assert "simulate" in helps and len(set(helps.values())) == 1, helps


@pytest.mark.parametrize("name", TRACE_READERS)
def test_every_trace_reader_takes_trace_and_reader_options(name):
    shown = _visible(COMMANDS[name])
    assert "--trace" in shown, name
    if name in NO_READER_OPTIONS:
        assert "-o" not in shown, f"{name} has -o now: drop it from NO_READER_OPTIONS"
        return
    assert "-o" in shown and shown["-o"] is shown["--option"], name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_trace_and_reader_options_go_together(name):
    shown = _visible(COMMANDS[name])
    if "--trace" in shown and name not in NO_READER_OPTIONS:
        assert "-o" in shown, f"{name} reads a trace but takes no reader options"
    if "-o" in shown:
        assert "--trace" in shown, name


@pytest.mark.parametrize("name", RANDOM)
def test_every_command_with_randomness_takes_a_seed(name):
    assert "--seed" in _visible(COMMANDS[name]), name


def test_a_sweep_over_seeds_says_seeds():
    assert "--seeds" in _visible(COMMANDS["experiment lmetric"])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_output_json_is_a_file_of_json_only(name):
    shown = _visible(COMMANDS[name])
    if "--output-json" in shown:
        assert "JSON" in (shown["--output-json"].help or ""), (name, shown["--output-json"].help)


def test_old_spellings_still_parse():
    """Hidden, not removed: kept for one release."""
    assert "--report" in _all_flags(COMMANDS["experiment lmetric"])
    assert "--output-json" in _all_flags(COMMANDS["experiment lmetric"])
    assert "--jobs" in _all_flags(COMMANDS["experiment omega"])
    assert "--plot-dir" in _all_flags(COMMANDS["simulate"])


def test_lmetric_sweeps_a_given_trace_with_reader_options_into_its_run_folder(tmp_path):
    import json

    from wildserve.cli import run

    out = tmp_path / "run"
    args = ["experiment", "lmetric", "--trace", "builtin:weka-claude-code", "-o", "max_idle_s=30",
            "--max-requests", "120", "--models", "qwen2.5-7b@h20", "--policies", "round-robin",
            "--linear", "", "--no-zero-score-demo", "--rate-scales", "1", "--jobs", "1",
            "--cache-dir", "none", "--instances", "2", "--out", str(out)]  # fmt: skip
    assert run(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "results.json"]
    doc = json.loads((out / "results.json").read_text())
    (workload,) = doc["config"]["workloads"]
    assert workload["spec"] == "builtin:weka-claude-code"
    assert workload["options"] == {"max_idle_s": 30}
    assert [r["workload"] for r in doc["runs"]] == ["weka-claude-code"]


def test_lmetric_takes_seeds_and_loads_per_workload(tmp_path):
    import json

    from wildserve.cli import run

    out = tmp_path / "run"
    args = ["experiment", "lmetric", "--workloads", "mooncake,weka", "--max-requests", "30",
            "--models", "qwen2.5-7b@h20", "--policies", "round-robin", "--linear", "",
            "--no-zero-score-demo", "--rate-scales", "1", "--rate-scales", "weka=0.5,2",
            "--seeds", "0", "--seeds", "weka=1,2", "--jobs", "1", "--cache-dir", "none",
            "--instances", "2", "--out", str(out)]  # fmt: skip
    assert run(args) == 0
    doc = json.loads((out / "results.json").read_text())
    given = {w["name"]: (w["rate_scales"], w["seeds"]) for w in doc["config"]["workloads"]}
    assert given == {"mooncake": ([1.0], [0]), "weka": ([0.5, 2.0], [1, 2])}
    assert len(doc["runs"]) == 1 + 2 * 2
