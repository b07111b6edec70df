"""Pydantic models of the container protocol (POST /invocations) and the backend parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MODERATION_LABELS",
    "ChatParameters",
    "ChatRequest",
    "Message",
    "ModerationRequest",
    "ModerationResponse",
    "Source",
]

# Ordered from least to most cautious; the order defines the aggregate label of a batch.
MODERATION_LABELS: tuple[str, ...] = (
    "casual",
    "possibly needs caution",
    "probably needs caution",
    "needs caution",
    "needs intervention",
)

_MAX_STOP_WORDS = 8


class Message(BaseModel):
    """One chat turn."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class ChatParameters(BaseModel):
    """Generation parameters; ranges follow vLLM's sampling parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0, description="0 disables top-k")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0)
    stop: list[str] = Field(default_factory=list, max_length=_MAX_STOP_WORDS)
    no_retrieval: bool = False

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not word for word in value):
            raise ValueError("stop words must be non-empty strings")
        return value

    def to_backend_params(
        self, *, max_tokens: int, extra_stop: list[str], vllm_extensions: bool = True
    ) -> dict[str, Any]:
        """Map to OpenAI ``/v1/completions`` fields (plus vLLM's ``top_k``).

        Parameters
        ----------
        max_tokens
            The resolved ``max_new_tokens`` (after defaults and the cap).
        extra_stop
            Stop words configured for the model's prompt template.
        vllm_extensions
            Send vLLM's extra sampling fields (``top_k``, ``repetition_penalty``); plain
            OpenAI servers such as ``transformers serve`` reject unknown fields.

        Returns
        -------
        dict[str, Any]
            Request fields for the backend.
        """
        stop = list(dict.fromkeys([*self.stop, *extra_stop]))
        params: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }
        if vllm_extensions and self.top_k > 0:
            params["top_k"] = self.top_k
        if stop:
            params["stop"] = stop
        if self.seed is not None:
            params["seed"] = self.seed
        if vllm_extensions and self.repetition_penalty is not None:
            params["repetition_penalty"] = self.repetition_penalty
        return params


class ChatRequest(BaseModel):
    """Chat role request body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: str | list[Message]
    parameters: ChatParameters = Field(default_factory=ChatParameters)
    stream: bool = False

    @field_validator("inputs")
    @classmethod
    def _inputs_not_empty(cls, value: str | list[Message]) -> str | list[Message]:
        if isinstance(value, str) and not value.strip():
            raise ValueError("inputs must not be empty")
        if isinstance(value, list):
            if not value:
                raise ValueError("inputs must hold at least one message")
            if value[-1].role != "user":
                raise ValueError("the last message must come from the user")
        return value

    def messages(self) -> list[Message]:
        """The conversation as messages (a plain string is one user turn)."""
        if isinstance(self.inputs, str):
            return [Message(role="user", content=self.inputs)]
        return list(self.inputs)


class ModerationRequest(BaseModel):
    """Moderation role request body: one text or a list of texts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: str | list[str]

    @field_validator("inputs")
    @classmethod
    def _inputs_not_empty(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("inputs must hold at least one text")
        return value

    def texts(self) -> list[str]:
        """The texts to classify."""
        return [self.inputs] if isinstance(self.inputs, str) else list(self.inputs)


class ModerationResponse(BaseModel):
    """Moderation result: the most cautious label and one label per input."""

    label: str
    labels: list[str]


class Source(BaseModel):
    """A retrieved passage as reported in ``details.sources``."""

    id: str
    title: str
    score: float
