"""A model folder's chat template, found and rendered the way transformers (and so vLLM) does it.

transformers 5 saves the template to ``chat_template.jinja`` (named extras under
``additional_chat_templates/NAME.jinja``); older folders keep it in ``tokenizer_config.json`` as a
string or a list of ``{"name", "template"}``. The separate files win over the config entry, and of
several templates the one named ``default`` is used. The Jinja environment mirrors transformers'
(``trim_blocks``, ``lstrip_blocks``, loop controls, the ``{% generation %}`` tag, a ``tojson`` that
does not escape HTML, ``raise_exception`` and ``strftime_now``): a template rendered differently
from the engine's would tokenize differently, and chat prefix affinity would be lost.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

from wildserve.errors import ConfigError

CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _read_config(folder: Path) -> dict:
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return {}
    try:
        doc = json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{config}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{config}: expected a JSON object")
    return doc


def find_chat_template(folder: Path) -> tuple[str, str] | None:
    """``(where it came from, template source)`` of the default template, or None if there is none."""
    templates: dict[str, tuple[str, str]] = {}
    main = folder / CHAT_TEMPLATE_FILE
    if main.is_file():
        templates["default"] = (str(main), main.read_text(encoding="utf-8"))
    extra = folder / CHAT_TEMPLATE_DIR
    if extra.is_dir():
        for f in sorted(extra.glob("*.jinja")):
            templates.setdefault(f.name.removesuffix(".jinja"), (str(f), f.read_text("utf-8")))
    if not templates:  # the config's entry counts only when no template file exists
        where = str(folder / "tokenizer_config.json")
        source = _read_config(folder).get("chat_template")
        if isinstance(source, str):
            templates["default"] = (where, source)
        elif isinstance(source, list):
            for t in source:
                if isinstance(t, dict) and isinstance(t.get("template"), str):
                    templates[str(t.get("name"))] = (f"{where}[{t.get('name')}]", t["template"])
    if not templates:
        return None
    if "default" in templates:
        return templates["default"]
    if len(templates) == 1:
        return next(iter(templates.values()))
    raise ConfigError(
        f"{folder}: several chat templates ({', '.join(sorted(templates))}) and none named 'default'"
    )


def special_tokens(folder: Path) -> dict[str, str]:
    """bos/eos/unk/pad token strings the template may use, from the tokenizer config (or the
    legacy ``special_tokens_map.json``), as transformers passes them to the template."""
    doc = _read_config(folder)
    legacy = folder / "special_tokens_map.json"
    if legacy.is_file():
        try:
            doc = {**json.loads(legacy.read_text(encoding="utf-8")), **doc}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{legacy}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    out = {}
    for key in SPECIAL_TOKEN_KEYS:
        tok = doc.get(key)
        if isinstance(tok, dict):
            tok = tok.get("content")
        if isinstance(tok, str):
            out[key] = tok
    return out


def compile_chat_template(where: str, source: str) -> Any:
    """A Jinja template in transformers' sandboxed environment; ConfigError names a bad template."""
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
        raise ConfigError(
            f"{where}: has a chat template; install jinja2 (the 'gateway' extra) to render it"
        ) from None

    class GenerationTag(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body (transformers tracks it)."""

        tags: ClassVar[set[str]] = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render", [])
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message: str):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{where}:{exc.lineno}: bad chat template ({exc.message})") from None
