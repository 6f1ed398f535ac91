"""Config-field helpers shared by every layer's config dataclasses and their command lines.

A setting is defined once, as a dataclass field made by :func:`option` (default, help text, bounds);
``__post_init__`` calls :func:`check_bounds`, and ``wildserve.config_cli`` turns the fields into
command-line options (default, help text and bounds read back, never restated).
"""

from __future__ import annotations

from dataclasses import field, fields

from wildserve.errors import ConfigError


def option(default: object, help: str, **bounds: float) -> object:
    """A config field with its help text and bounds (ge, gt, le, lt), checked by check_bounds."""
    return field(default=default, metadata={"help": help, **bounds})


def check_bounds(config: object, label: str) -> None:
    """Raise ConfigError naming the first numeric field outside its declared bounds."""
    for f in fields(config):
        value = getattr(config, f.name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        m = f.metadata
        if ("ge" in m and value < m["ge"]) or ("gt" in m and value <= m["gt"]):
            raise ConfigError(f"{label}: {f.name}={value} is too small ({m['help']})")
        if ("le" in m and value > m["le"]) or ("lt" in m and value >= m["lt"]):
            raise ConfigError(f"{label}: {f.name}={value} is too large ({m['help']})")
