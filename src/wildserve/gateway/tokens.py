"""Prompt -> token ids, shared by the gateway (routing hashes), the emulated engine and the replayer.

Two tokenizers. ``ByteTokenizer`` (the default) treats each UTF-8 byte as one token: it needs no
vocabulary file, and the gateway's byte blocks then match an emulated engine's token blocks exactly.
``HFTokenizer`` loads a Hugging Face ``tokenizer.json`` (and the chat template beside it, found as
transformers finds it), which is what a real vLLM fleet needs for exact prefix matching.
Chat requests are rendered to one prompt string first, by the chat template or a fixed plain layout.
Special tokens follow vLLM's defaults: added for completions, not for chat (whose template writes
them), unless the body says otherwise with vLLM's ``add_special_tokens`` field.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from wildserve.errors import ConfigError
from wildserve.gateway.chat_template import (
    compile_chat_template,
    find_chat_template,
    special_tokens,
)


class PromptError(ValueError):
    """A request body has no usable prompt (the gateway answers 400)."""


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str, add_special_tokens: bool = False) -> Sequence[int]: ...

    def decode_one(self, token_id: int) -> str: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def render_chat(self, messages: list[dict]) -> str: ...


def plain_chat(messages: list[dict]) -> str:
    """The chat layout used when no template is available: one ``<|role|>`` header per message."""
    parts = []
    for m in messages:
        parts.append(f"<|{m.get('role', 'user')}|>\n{_content_text(m.get('content'))}\n")
    parts.append("<|assistant|>\n")
    return "".join(parts)


def _content_text(content: Any) -> str:
    """OpenAI content is a string or a list of parts; only text parts count, joined by newlines
    (vLLM's "string" content format)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    raise PromptError("'content' must be a string or a list of content parts")


def _string_content(message: dict) -> dict:
    """The message as a template sees it: its content one string (None stays None, as in vLLM)."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return message
    return {**message, "content": _content_text(content)}


class ByteTokenizer:
    """One token per UTF-8 byte; ids 0..255. Exact, vocabulary-free and fast (``bytes`` is a sequence)."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str, add_special_tokens: bool = False) -> bytes:
        return text.encode("utf-8")

    def decode_one(self, token_id: int) -> str:
        return chr(token_id) if 32 <= token_id < 127 else " "

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(t & 0xFF for t in token_ids).decode("utf-8", errors="replace")

    def render_chat(self, messages: list[dict]) -> str:
        return plain_chat(messages)


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer, plus the model's chat template when one is shipped.

    The template is found the way transformers finds it (``chat_template.jinja`` and
    ``additional_chat_templates/`` beside ``tokenizer.json`` first, then ``tokenizer_config.json``'s
    ``chat_template``), so that chat prompts tokenize exactly as vLLM tokenizes them.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as _Tok

        path = Path(path)
        file = path / "tokenizer.json" if path.is_dir() else path
        if not file.is_file():
            raise ConfigError(f"{file}: tokenizer file not found")
        try:
            self._tok = _Tok.from_file(str(file))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise ConfigError(f"{file}: not a Hugging Face tokenizer.json ({exc})") from None
        self.name = str(file)
        self.vocab_size = self._tok.get_vocab_size()
        found = find_chat_template(file.parent)
        self.template_source = found[0] if found else None
        self._template = compile_chat_template(*found) if found else None
        self._special = special_tokens(file.parent)

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # the batch "fast" path skips character offsets: ~40% less CPU than ``encode`` per prompt
        fast = getattr(self._tok, "encode_batch_fast", None)
        if fast is not None:
            return fast([text], add_special_tokens=add_special_tokens)[0].ids
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode_one(self, token_id: int) -> str:
        return self._tok.decode([token_id])

    def decode(self, token_ids: Sequence[int]) -> str:
        return self._tok.decode(list(token_ids), skip_special_tokens=False)

    def render_chat(self, messages: list[dict]) -> str:
        if self._template is None:
            return plain_chat(messages)
        return self._template.render(
            messages=[_string_content(m) for m in messages],
            tools=None,
            documents=None,
            add_generation_prompt=True,
            **self._special,
        )


def make_tokenizer(path: str | Path | None) -> Tokenizer:
    """``None`` or ``"bytes"``: byte tokens; otherwise a ``tokenizer.json`` file or its folder."""
    if path is None or str(path) in ("", "bytes"):
        return ByteTokenizer()
    return HFTokenizer(path)


def prompt_text(body: dict, chat: bool, tokenizer: Tokenizer) -> str:
    """The prompt string of an OpenAI completions / chat-completions body; PromptError if absent."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise PromptError("'messages' must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict):
                raise PromptError("each message must be an object")
            _content_text(m.get("content"))  # validates the shape
        return tokenizer.render_chat(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if (
        isinstance(prompt, list)
        and len(prompt) > 1
        and all(isinstance(p, (str, list)) for p in prompt)
    ):
        raise PromptError(
            f"'prompt' is a batch of {len(prompt)} prompts; send one request per prompt"
        )
    if not isinstance(prompt, str):
        raise PromptError(
            "'prompt' is required: a string, a list of one string, or a list of token ids"
        )
    return prompt


def _is_token_id(t: object) -> bool:
    return isinstance(t, int) and not isinstance(t, bool) and t >= 0


def add_special_tokens(body: dict, chat: bool) -> bool:
    """vLLM's default: special tokens (BOS) are added to completions, not to chat prompts."""
    value = body.get("add_special_tokens")
    if value is None:
        return not chat
    if not isinstance(value, bool):
        raise PromptError("'add_special_tokens' must be a boolean")
    return value


def prompt_token_ids(body: dict, chat: bool, tokenizer: Tokenizer) -> Sequence[int]:
    """Token ids of a request's prompt; a completions prompt may also be given as token ids."""
    if not chat:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list):
            prompt = prompt[0]  # a batch of one token-id prompt
        if isinstance(prompt, list) and prompt and all(_is_token_id(t) for t in prompt):
            return prompt
    text = prompt_text(body, chat, tokenizer)
    return tokenizer.encode(text, add_special_tokens(body, chat))
