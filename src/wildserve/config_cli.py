"""Config dataclasses make their command-line options, and the options every command shares.

A config dataclass is the one place a setting's default, help text and bounds live (fields made with
``option(default, help, ge=..., gt=..., le=..., lt=...)``). ``config_options`` expands such classes
into typer options, so no command restates a default or a help text, and every bound is checked
while the command line is parsed, before any work starts: ``--instances 0`` is a one-line usage
error (exit 2) naming the option and the allowed range. The command receives the built configs::

    @config_options(engine=Fields(EngineConfig, only=("block_size", "max_num_seqs")),
                    cluster=Fields(ClusterConfig, flags={"num_instances": "instances"}))
    def simulate(engine: EngineConfig, cluster: ClusterConfig, trace: TraceSpec = DEFAULT_TRACE):
        ...

Nested dataclasses and collections are not expanded (the command composes those). The shared
vocabulary (``--trace``, ``-o KEY=VALUE``, ``--out``, ``--output-json``, ``--jobs``) is defined
once below as annotated types.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

_SCALARS = (int, float, str, bool, Path)


class BoundedNumber:
    """Parses an int or float and checks it against a config field's bounds (typer's ``parser``);
    NaN and infinities are refused unless the field allows infinity (``allow_inf``)."""

    def __init__(self, kind: type, bounds: Mapping[str, float], allow_inf: bool = False) -> None:
        self.kind = kind
        self.bounds = {k: bounds[k] for k in ("ge", "gt", "le", "lt") if k in bounds}
        self.allow_inf = allow_inf
        self.name = kind.__name__

    def describe(self) -> str:
        """The allowed range as the help text and the error message show it, e.g. ``>= 1``."""
        symbols = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
        parts = [f"{symbols[k]} {v:g}" for k, v in self.bounds.items()]
        return " and ".join(parts) if parts else "any finite number"

    def fail(self, message: str) -> typing.NoReturn:
        raise typer.BadParameter(message)

    def __call__(self, value: Any) -> int | float:
        if isinstance(value, self.kind) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = self.kind(str(value).strip()) if self.kind is float else int(str(value))
            except ValueError:
                self.fail(f"{value!r} is not {'an integer' if self.kind is int else 'a number'}")
        if isinstance(number, float) and (
            math.isnan(number) or (math.isinf(number) and not self.allow_inf)
        ):
            self.fail(f"{value} is not a finite number (allowed: {self.describe()})")
        if not self.admits(number):
            self.fail(f"{value} is outside the allowed range {self.describe()}")
        return number

    def admits(self, number: float) -> bool:
        b = self.bounds
        return not (
            ("ge" in b and not number >= b["ge"])
            or ("gt" in b and not number > b["gt"])
            or ("le" in b and not number <= b["le"])
            or ("lt" in b and not number < b["lt"])
        )


def bounded(kind: type, allow_inf: bool = False, **bounds: float) -> BoundedNumber:
    """A parser for a numeric option that is not a config field (``--jobs``, ``--port``)."""
    return BoundedNumber(kind, bounds, allow_inf)


@dataclass(frozen=True)
class Fields:
    """Which fields of a config class become options, and under which flags."""

    cls: type
    only: tuple[str, ...] | None = None  # these fields only (default: every scalar field)
    exclude: tuple[str, ...] = ()
    flags: Mapping[str, str] = field(default_factory=dict)  # field -> flag name, no dashes
    fixed: Mapping[str, Any] = field(default_factory=dict)  # constructor values, not options


@dataclass(frozen=True)
class ConfigParam:
    """One generated option: the command parameter it fills and the field it comes from."""

    param: str  # python name of the typer parameter
    group: str  # keyword the built config is passed under
    cls: type
    field: str
    repeatable: bool = False  # a list[str] field: the option may be given many times


def _scalar(hint: Any) -> tuple[type, bool] | None:
    """(base type, optional) of a scalar annotation, None for anything else."""
    if hint in _SCALARS:
        return hint, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and args[0] in _SCALARS and len(typing.get_args(hint)) == 2:
            return args[0], True
    return None


def field_params(group: str, spec: Fields) -> list[tuple[inspect.Parameter, ConfigParam]]:
    """The typer parameters one config class contributes to a command."""
    hints = typing.get_type_hints(spec.cls)
    known = {f.name for f in dataclasses.fields(spec.cls)}
    for name in (*(spec.only or ()), *spec.exclude, *spec.flags, *spec.fixed):
        if name not in known:
            raise TypeError(f"{spec.cls.__name__} has no field '{name}'")
    out = []
    for f in dataclasses.fields(spec.cls):
        if not f.init or f.name in spec.exclude or f.name in spec.fixed:
            continue
        if spec.only is not None and f.name not in spec.only:
            continue
        flag = spec.flags.get(f.name, f.name.replace("_", "-"))
        pname = flag.replace("-", "_")
        help_text = f.metadata.get("help", "")
        if hints[f.name] == list[str]:  # a repeatable option; the factory's value when not given
            info = typer.Option(f"--{flag}", help=help_text)
            param = inspect.Parameter(
                pname, inspect.Parameter.KEYWORD_ONLY, default=None,
                annotation=Annotated[list[str] | None, info],
            )  # fmt: skip
            out.append((param, ConfigParam(pname, group, spec.cls, f.name, repeatable=True)))
            continue
        scalar = _scalar(hints[f.name])
        if scalar is None:
            if spec.only is not None:
                raise TypeError(f"{spec.cls.__name__}.{f.name} is not a scalar option")
            continue
        kind, optional = scalar
        if f.default is dataclasses.MISSING:
            raise TypeError(f"{spec.cls.__name__}.{f.name} has no default")
        decls = [f"--{flag}/--no-{flag}"] if kind is bool else [f"--{flag}"]
        extra: dict[str, Any] = {}
        if kind in (int, float):
            bounds = {k: v for k, v in f.metadata.items() if k in ("ge", "gt", "le", "lt")}
            extra["parser"] = parser = BoundedNumber(
                kind, bounds, f.metadata.get("allow_inf", False)
            )
            if bounds:
                help_text = f"{help_text} [{parser.describe()}]"
            extra["metavar"] = kind.__name__.upper()
        annotation = (kind | None) if optional else kind
        info = typer.Option(*decls, help=help_text, **extra)
        param = inspect.Parameter(
            pname,
            inspect.Parameter.KEYWORD_ONLY,
            default=f.default,
            annotation=Annotated[annotation, info],
        )
        out.append((param, ConfigParam(pname, group, spec.cls, f.name)))
    return out


def config_options(**groups: type | Fields) -> Callable[[F], F]:
    """Replace the command's parameters named in ``groups`` by the options of their config classes;
    the command is called with the built configs (bounds already checked while parsing)."""
    specs = {k: g if isinstance(g, Fields) else Fields(g) for k, g in groups.items()}

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        hints = typing.get_type_hints(fn, include_extras=True)
        missing = set(specs) - set(sig.parameters)
        if missing:
            raise TypeError(f"{fn.__name__} has no parameter {sorted(missing)}")
        params = [
            p.replace(
                kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)
            )
            for p in sig.parameters.values()
            if p.name not in specs
        ]
        generated: dict[str, ConfigParam] = {}
        for group, spec in specs.items():
            for param, meta in field_params(group, spec):
                if param.name in generated or param.name in sig.parameters:
                    raise TypeError(f"{fn.__name__}: option --{param.name} is generated twice")
                params.append(param)
                generated[param.name] = meta

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values: dict[str, dict[str, Any]] = {g: dict(s.fixed) for g, s in specs.items()}
            for pname, meta in generated.items():
                value = kwargs.pop(pname)
                if value is None and meta.repeatable:
                    continue  # not given: the field's default factory
                values[meta.group][meta.field] = list(value) if meta.repeatable else value
            built = {g: specs[g].cls(**v) for g, v in values.items()}
            return fn(**built, **kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__config_params__ = generated  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return decorate


def generated_params(callback: Callable[..., Any]) -> dict[str, ConfigParam]:
    """The options ``config_options`` made for a command (for tests and ``--help`` tooling)."""
    while callback is not None:
        found = getattr(callback, "__config_params__", None)
        if found is not None:
            return found
        callback = getattr(callback, "__wrapped__", None)
    return {}


def bounded_option(
    kind: type, help: str, *names: str, hidden: bool = False, **bounds: float
) -> Any:
    """A typer option for a number that is not a config field, checked at parse time."""
    return typer.Option(
        *names, parser=bounded(kind, **bounds), metavar=kind.__name__.upper(), help=help,
        hidden=hidden,
    )  # fmt: skip


# ---- the vocabulary every command shares ------------------------------------------------------
TraceSpec = Annotated[
    str, typer.Option("--trace", help="trace spec: builtin:NAME, FORMAT:PATH or a path")
]
ReaderOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--option", "-o", help="reader option KEY=VALUE (repeatable), e.g. -o max_idle_s=30"
    ),
]
TraceSpecs = Annotated[
    list[str] | None,
    typer.Option(
        "--trace",
        help="trace spec (repeatable): builtin:NAME, FORMAT:PATH or a path; replaces the defaults",
    ),
]
OutDir = Annotated[
    Path | None,
    typer.Option("--out", help="run folder: results JSON, report and plots inside (atomic writes)"),
]
OutputJson = Annotated[
    Path | None, typer.Option("--output-json", help="write only the results JSON here (atomically)")
]
Jobs = Annotated[int, bounded_option(int, "worker processes (0: one per core)", "--jobs", ge=0)]
MaxRequests = Annotated[
    int, bounded_option(int, "use the first N requests of each trace (0: all)", ge=0)
]


def trace_name(spec: str) -> str:
    """A trace spec as a name fit for file names and tables: ``mooncake:/d/x.jsonl`` -> ``x``."""
    import re

    body = spec.partition(":")[2] if ":" in spec else spec
    stem = Path(body).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-") or "trace"


def number_list(
    text: str, option: str, kind: type = float, ranges: bool = False, **bounds: float
) -> tuple:
    """``a,b,c`` of ``kind`` (int or float) for a list-valued option, each value checked as a
    ``bounded`` option is (``ge``/``gt``/``le``/``lt``, finite); with ``ranges`` (floats) also
    ``start:stop:step``, inclusive. A bad or empty list, or a value outside the bounds, is a
    one-line ``ConfigError`` naming ``option``."""
    import numpy as np

    from wildserve.errors import ConfigError

    check = BoundedNumber(kind, bounds)
    values: list = [x for x in text.split(",") if x.strip()]
    if ranges and ":" in text:
        try:
            lo, hi, step = (float(x) for x in text.split(":"))
            if step <= 0 or hi < lo:
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"{option}: '{text}' is not a range start:stop:step (step > 0, stop >= start)"
            ) from None
        values = [float(x) for x in np.round(np.arange(lo, hi + step / 2, step), 6)]
    if not values:
        raise ConfigError(f"{option}: empty list")
    try:
        return tuple(check(v) for v in values)
    except typer.BadParameter as e:
        raise ConfigError(f"{option}: {e.message}") from None


# ---- introspection (tests, tooling) -------------------------------------------------------------
def _option_info(param: inspect.Parameter, hint: Any) -> tuple[Any, Any]:
    """(typer OptionInfo or ArgumentInfo, bare annotation) of one command parameter."""
    info = None
    if typing.get_origin(hint) is Annotated:
        args = typing.get_args(hint)
        hint = args[0]
        info = next((a for a in args[1:] if isinstance(a, typer.models.ParameterInfo)), None)
    if info is None and isinstance(param.default, typer.models.ParameterInfo):
        info = param.default
    return info, hint


def command_options(app: typer.Typer) -> list[tuple[tuple[str, ...], str, Any, Any]]:
    """(command path, long flag, base type, BoundedNumber or None) of every option of every command
    (hidden ones too); typer's own ``min``/``max`` count as bounds."""
    out: list[tuple[tuple[str, ...], str, Any, Any]] = []

    def walk(cmd: Any, path: tuple[str, ...]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, (*path, name))
            return
        if cmd.callback is None:
            return
        target = inspect.unwrap(cmd.callback, stop=lambda f: hasattr(f, "__signature__"))
        hints = typing.get_type_hints(target, include_extras=True)
        for param in inspect.signature(target).parameters.values():
            info, hint = _option_info(param, hints.get(param.name, param.annotation))
            if not isinstance(info, typer.models.OptionInfo):
                continue
            scalar = _scalar(hint)
            kind = scalar[0] if scalar else hint
            decls = [d.split("/")[0] for d in (info.param_decls or ()) if d.startswith("--")]
            flag = decls[0] if decls else "--" + param.name.replace("_", "-")
            parser = info.parser if isinstance(info.parser, BoundedNumber) else None
            if parser is None and kind in (int, float) and (info.min, info.max) != (None, None):
                typer_bounds = {"ge": info.min, "le": info.max}
                parser = BoundedNumber(
                    kind, {k: v for k, v in typer_bounds.items() if v is not None}
                )
            out.append((path, flag, kind, parser))

    walk(typer.main.get_command(app), ())
    return out
