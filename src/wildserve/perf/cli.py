"""``wildserve perf ...``: check the cost model against profiles, cost one step, refit efficiencies."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import typer

from wildserve.config_cli import bounded, config_options
from wildserve.perf.cost import CostModelSpec

_COUNT = bounded(int, ge=0)

app = typer.Typer(help="GPU step-time models: check, inspect and calibrate.", no_args_is_help=True)


@app.command()
def check(
    profiles: Path = typer.Option(
        None, help="Vidur compute profiles dir (default: the shipped ones)."
    ),
    output: Path = typer.Option(None, help="Write the markdown report here."),
    csv_path: Path = typer.Option(None, "--csv", help="Write every compared row as CSV here."),
) -> None:
    """Predicted vs measured per-layer time for every profile; median and worst relative error."""
    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    from wildserve.perf.check import ErrorStats, analytic_for, check_profile, render_markdown
    from wildserve.perf.profiles import find_profiles, write_atomic

    found = find_profiles(profiles)
    rows_by_profile = {}
    for prof in track(found, description="checking profiles", transient=True):
        rows_by_profile[f"{prof.gpu}:{prof.hf_id}"] = check_profile(prof, analytic_for)
    table = Table(title="analytic model vs measured (per-layer op sum)")
    for col in ("gpu", "profile", "rows", "median err", "p90 err", "worst err"):
        table.add_column(col, justify="right" if "err" in col or col == "rows" else "left")
    for rows in rows_by_profile.values():
        s = ErrorStats.of(rows)
        table.add_row(
            rows[0].gpu,
            rows[0].hf_id,
            str(s.count),
            f"{s.median:.1%}",
            f"{s.p90:.1%}",
            f"{s.worst:.1%}",
        )
    overall = ErrorStats.of([r for rows in rows_by_profile.values() for r in rows])
    table.add_row(
        "all",
        "overall",
        str(overall.count),
        f"{overall.median:.1%}",
        f"{overall.p90:.1%}",
        f"{overall.worst:.1%}",
    )
    Console().print(table)
    if output is not None:
        command = (
            "wildserve perf check"
            + (f" --profiles {profiles}" if profiles else "")
            + f" --output {output}"
        )
        source = (
            f"`{profiles}`"
            if profiles
            else "the profiles shipped in `wildserve/perf/data/vidur/compute`"
        )
        write_atomic(output, render_markdown(rows_by_profile, command, source).encode())
    if csv_path is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(
            ["gpu", "profile", "tp", "num_tokens", "measured_ms", "predicted_ms", "rel_error"]
        )
        for rows in rows_by_profile.values():
            for r in rows:
                writer.writerow(
                    [
                        r.gpu,
                        r.hf_id,
                        r.tp,
                        r.num_tokens,
                        f"{r.measured_s * 1e3:.6g}",
                        f"{r.predicted_s * 1e3:.6g}",
                        f"{r.rel_error:.4f}",
                    ]
                )
        write_atomic(csv_path, buf.getvalue().encode())


@app.command()
@config_options(spec=CostModelSpec)
def step(
    spec: CostModelSpec,
    prefill_tokens: int = typer.Option(
        0, help="New tokens of one prefill chunk.", parser=_COUNT, metavar="INT"
    ),
    prefill_context: int = typer.Option(
        0,
        help="Tokens already in KV before that chunk (cached prefix).",
        parser=_COUNT,
        metavar="INT",
    ),
    decode_seqs: int = typer.Option(
        0, help="Decoding sequences in the batch.", parser=_COUNT, metavar="INT"
    ),
    context: int = typer.Option(
        0, help="Context tokens of each decoding sequence.", parser=_COUNT, metavar="INT"
    ),
) -> None:
    """Cost one step and print where the time goes."""
    from rich.console import Console
    from rich.table import Table

    from wildserve.errors import ConfigError
    from wildserve.perf.batch import BatchShape
    from wildserve.perf.cost import build_cost_model
    from wildserve.perf.memory import kv_capacity

    if min(prefill_tokens, prefill_context, decode_seqs, context) < 0:
        raise ConfigError("token and sequence counts must be >= 0")
    model, gpu, tp, cost_model = spec.model, spec.gpu, spec.tp, spec.cost_model
    cm = build_cost_model(cost_model, model, gpu, tp)
    shape = BatchShape()
    if prefill_tokens:
        shape.add_chunk(prefill_tokens, prefill_context, samples=True)
    for _ in range(decode_seqs):
        shape.add_chunk(1, max(context, 1), samples=True)
    total = cm.step_time(shape)
    table = Table(title=f"{model} on {gpu} x{tp} ({cost_model}): {shape.num_tokens} tokens")
    table.add_column("component")
    table.add_column("ms", justify="right")
    table.add_column("share", justify="right")
    for name, secs in cm.breakdown(shape).items():
        table.add_row(name, f"{secs * 1e3:.4f}", f"{secs / total:.1%}" if total else "")
    table.add_row("[bold]step total[/bold]", f"[bold]{total * 1e3:.4f}[/bold]", "100%")
    console = Console()
    console.print(table)
    cap = kv_capacity(cm.model, cm.gpu, tp)
    console.print(
        f"KV cache per GPU: {cap.kv_bytes / 2**30:.1f} GiB = {cap.num_tokens:,} tokens "
        f"({cap.kv_bytes_per_token:,} B/token; weights {cap.param_bytes / 2**30:.1f} GiB, "
        f"reserve {cap.reserve_bytes / 2**30:.1f} GiB)"
    )


@app.command()
def fit(
    profiles: Path = typer.Option(
        None, help="Vidur compute profiles dir (default: the shipped ones)."
    ),
    stride: int = typer.Option(
        1,
        help="Use every n-th token count of each profile.",
        parser=bounded(int, ge=1),
        metavar="INT",
    ),
) -> None:
    """Refit the per-family efficiencies on the non-held-out profiles and print them as code."""
    from rich.console import Console

    from wildserve.perf.calibration import Efficiency
    from wildserve.perf.fit import (
        HOLDOUT,
        PROFILE_GPUS,
        collect,
        efficiency_source,
        fit_collective,
        fit_compute,
    )
    from wildserve.perf.gpus import get_gpu
    from wildserve.perf.profiles import find_profiles

    console = Console()
    found = find_profiles(profiles)
    # Collectives were profiled on H100 only: both families use the same fraction of their NVLink.
    lat, frac, err = fit_collective("all_reduce", get_gpu("h100").nvlink_bw)
    p2p_lat, p2p_frac, p2p_err = fit_collective("send_recv", get_gpu("h100").nvlink_bw)
    console.print(
        f"all_reduce: latency {lat * 1e6:.1f} us, bus bw {frac:.3f} of NVLink (median err {err:.1%})"
    )
    console.print(
        f"send_recv: latency {p2p_lat * 1e6:.1f} us, {p2p_frac:.3f} of NVLink (median err {p2p_err:.1%})"
    )
    for vidur_gpu, (_, family) in PROFILE_GPUS.items():
        train = [p for p in found if p.gpu == vidur_gpu and p.hf_id not in HOLDOUT]
        if not train:
            continue
        start = Efficiency(
            allreduce_latency_s=lat, allreduce_bw=frac, p2p_latency_s=p2p_lat, p2p_bw=p2p_frac
        )
        with console.status(f"fitting {family} on {len(train)} profiles"):
            eff, loss = fit_compute(collect(train, stride), start)
        console.print(f"# {family}: op-weighted training error {loss:.4f}")
        console.print(efficiency_source(family, eff), soft_wrap=True, highlight=False)


@app.command()
def pack(
    compute: Path = typer.Option(..., help="Vidur data/profiling/compute directory."),
    network: Path = typer.Option(None, help="Vidur data/profiling/network directory."),
) -> None:
    """Refresh the shipped gzipped profile copies from a Vidur checkout (maintainers only)."""
    from wildserve.perf.profiles import pack_network, pack_profiles

    written = pack_profiles(compute)
    if network is not None:
        written += pack_network(network)
    typer.echo(f"wrote {len(written)} files")


@app.command("models")
def list_models() -> None:
    """List the model shapes and GPUs the cost model knows."""
    from rich.table import Table

    from wildserve.console import make_console
    from wildserve.perf.gpus import GPUS, get_gpu
    from wildserve.perf.models import MODELS, get_model

    console = make_console()
    table = Table(title="models", header_style="bold")
    for col in ("name", "layers", "hidden", "heads/kv", "experts", "params (B)", "KV KiB/token"):
        table.add_column(col, justify="left" if col == "name" else "right")
    for name in MODELS.names():
        m = get_model(name)
        experts = f"{m.num_experts_per_tok}/{m.num_experts}" if m.num_experts else "-"
        table.add_row(
            name,
            str(m.num_layers),
            str(m.hidden_size),
            f"{m.num_heads}/{m.num_kv_heads}",
            experts,
            f"{m.num_params / 1e9:.1f}",
            f"{m.kv_bytes_per_token() / 1024:.0f}",
        )
    console.print(table)
    gpus = Table(title="GPUs", header_style="bold")
    for col in ("name", "family", "dense TFLOP/s", "HBM TB/s", "memory GiB"):
        gpus.add_column(col, justify="left" if col == "name" else "right")
    for name in GPUS.names():
        g = get_gpu(name)
        gpus.add_row(
            name,
            g.family,
            f"{g.peak_flops / 1e12:.0f}",
            f"{g.hbm_bw / 1e12:.2f}",
            f"{g.memory_bytes / 2**30:.0f}",
        )
    console.print(gpus)
