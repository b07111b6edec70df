"""The scripted backend's script: ordered rules saying what to answer, how fast, how to fail."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

__all__ = ["WORD_TOKENS", "Rule", "Script", "SplitMode", "split_tokens"]

WORD_TOKENS = re.compile(r"\s*\S+|\s+")
"""How the scripted backend splits text into tokens (and counts prompt tokens)."""

SplitMode = Literal["words", "chars", "chunks"]


def split_tokens(text: str, mode: SplitMode, chunk_size: int) -> list[str]:
    """Split a response text into the pieces that stream one per chunk.

    Parameters
    ----------
    text
        The full response text.
    mode
        ``words``: one token per word with its leading whitespace (``"Hi there"`` gives
        ``["Hi", " there"]``); ``chars``: one character per token; ``chunks``: fixed-size
        pieces of ``chunk_size`` characters.
    chunk_size
        Size of each piece in ``chunks`` mode.

    Returns
    -------
    list[str]
        Tokens whose concatenation is ``text``.
    """
    if mode == "words":
        return WORD_TOKENS.findall(text)
    if mode == "chars":
        return list(text)
    return [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]


class Rule(BaseModel):
    """One scripted answer: when it applies, what it says, how fast, and how it fails."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    contains: str | None = Field(default=None, description="substring of the matched text")
    regex: str | None = Field(default=None, description="re.search pattern on the matched text")
    scope: Literal["last_user", "all"] = Field(
        default="last_user",
        description="chat: match the last user message or all messages joined by newlines",
    )
    endpoint: Literal["any", "chat", "completions"] = "any"
    max_uses: int | None = Field(default=None, ge=1, description="rule retires after N matches")
    response: str = "This is a scripted answer."
    tokens: list[str] | None = Field(default=None, description="explicit tokens; wins over split")
    split: SplitMode = "words"
    chunk_size: int = Field(default=4, ge=1)
    first_token_delay_s: float = Field(default=0.0, ge=0)
    token_delay_s: float = Field(default=0.0, ge=0)
    finish_reason: str = "stop"
    fail_after_tokens: int | None = Field(default=None, ge=0)
    fail_mode: Literal["disconnect", "error_event"] = "disconnect"
    barrier: int | None = Field(
        default=None,
        ge=1,
        description="hold each answer, once its response has started, until this many answers "
        "of the rule are open at once (proves that a caller really runs them concurrently)",
    )
    barrier_timeout_s: float = Field(default=30.0, gt=0)
    http_status: int | None = Field(default=None, ge=400, le=599)
    error_message: str = "scripted failure"
    error_type: str | None = None

    _pattern: re.Pattern[str] | None = PrivateAttr(default=None)
    _tokens: list[str] = PrivateAttr(default_factory=list)
    _encoded: list[bytes] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        """Compile the pattern and pre-encode every token once, so streaming only concatenates."""
        self._pattern = re.compile(self.regex) if self.regex is not None else None
        tokens = (
            self.tokens
            if self.tokens is not None
            else split_tokens(self.response, self.split, self.chunk_size)
        )
        self._tokens = list(tokens)
        self._encoded = [json.dumps(token).encode() for token in tokens]

    def matches(self, endpoint: str, last_user: str, everything: str) -> bool:
        """Tell whether this rule answers a request (ignores ``max_uses``)."""
        if self.endpoint not in ("any", endpoint):
            return False
        text = last_user if self.scope == "last_user" else everything
        if self.contains is not None and self.contains not in text:
            return False
        return not (self._pattern is not None and self._pattern.search(text) is None)

    @property
    def token_texts(self) -> list[str]:
        """The tokens this rule streams, before ``max_tokens`` and ``stop`` apply."""
        return self._tokens

    @property
    def encoded_tokens(self) -> list[bytes]:
        """Each token as a JSON string literal, encoded once at load."""
        return self._encoded


class Script(BaseModel):
    """An ordered list of rules (first match wins) and the rule used when none matches."""

    model_config = ConfigDict(extra="forbid")

    model: str = "scripted-model"
    max_model_len: int = Field(default=4096, ge=1)
    rules: list[Rule] = Field(default_factory=list)
    default: Rule = Field(default_factory=Rule)

    @classmethod
    def from_file(cls, path: str | Path) -> Script:
        """Load a script from a JSON file."""
        return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
