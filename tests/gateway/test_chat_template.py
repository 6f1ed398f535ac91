"""Chat templates found and rendered as transformers does; special tokens as vLLM adds them."""

from __future__ import annotations

import json

import pytest

from wildserve.errors import ConfigError
from wildserve.gateway.chat_template import find_chat_template
from wildserve.gateway.tokens import HFTokenizer, prompt_token_ids

WORDS = ["hello", "world", "<s>", "<user>", "<bot>", "A", "B"]


def _tokenizer_dir(tmp_path, bos: bool = False):
    """A real word-level tokenizer; with ``bos`` its post-processor adds ``<s>`` like Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="A"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", 2)]
        )
    tok.save(str(tmp_path / "tokenizer.json"))
    return tmp_path


def test_the_jinja_file_wins_over_the_config_entry(tmp_path):
    d = _tokenizer_dir(tmp_path)
    (d / "tokenizer_config.json").write_text(
        json.dumps({"chat_template": "CONFIG", "bos_token": {"content": "<s>"}})
    )
    (d / "chat_template.jinja").write_text(
        "{{ bos_token }}{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
        "{% if add_generation_prompt %}<bot>{% endif %}"
    )
    t = HFTokenizer(d)
    assert t.template_source == str(d / "chat_template.jinja")
    messages = [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]
    assert t.render_chat(messages) == "<s><user> hello <bot>"


def test_named_templates_in_the_config_and_in_the_extra_folder(tmp_path):
    d = _tokenizer_dir(tmp_path)
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": named}))
    assert find_chat_template(d)[1] == "D"
    (d / "additional_chat_templates").mkdir()
    (d / "additional_chat_templates" / "rag.jinja").write_text("R")
    assert find_chat_template(d)[1] == "R"  # files win over the config; a lone one is used
    (d / "additional_chat_templates" / "other.jinja").write_text("O")
    with pytest.raises(ConfigError, match="none named 'default'"):
        find_chat_template(d)


def test_transformers_environment_generation_tag_tojson_and_errors(tmp_path):
    d = _tokenizer_dir(tmp_path)
    (d / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no') }}{% endif %}"
        "{% generation %}{{ m | tojson }}{% endgeneration %}{% if loop.index > 0 %}{% break %}"
        "{% endif %}{% endfor %}"
    )
    t = HFTokenizer(d)
    assert t.render_chat([{"role": "user", "content": "<é>"}, {"role": "x", "content": "y"}]) == (
        '{"role": "user", "content": "<é>"}'  # no HTML escaping, one message (loop controls)
    )
    import jinja2

    with pytest.raises(jinja2.TemplateError, match="no"):
        t.render_chat([{"role": "bad", "content": ""}])
    (d / "chat_template.jinja").write_text("{% for m in messages %}")
    with pytest.raises(ConfigError, match=r"chat_template\.jinja:1: bad chat template"):
        HFTokenizer(d)


def test_special_tokens_added_to_completions_not_to_chat(tmp_path):
    d = _tokenizer_dir(tmp_path, bos=True)
    (d / "chat_template.jinja").write_text(
        "<s> {% for m in messages %}{{ m.content }} {% endfor %}"
    )
    t = HFTokenizer(d)
    bos = WORDS.index("<s>")
    hello = WORDS.index("hello")
    assert prompt_token_ids({"prompt": "hello"}, False, t) == [bos, hello]
    assert prompt_token_ids({"prompt": "hello", "add_special_tokens": False}, False, t) == [hello]
    chat = {"messages": [{"role": "user", "content": "hello"}]}
    assert prompt_token_ids(chat, True, t) == [bos, hello]  # the template's <s> only, not twice
    assert prompt_token_ids({**chat, "add_special_tokens": True}, True, t) == [bos, bos, hello]
