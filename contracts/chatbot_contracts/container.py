"""The container protocol (``POST /invocations``): requests and the streamed events, both sides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from chatbot_contracts.moderation import ModerationLabel

__all__ = [
    "JSONLINES",
    "ChatParameters",
    "ChatRequest",
    "Details",
    "ErrorBody",
    "ErrorEvent",
    "FinalEvent",
    "Message",
    "ModerationRequest",
    "ModerationResponse",
    "Source",
    "StreamEvent",
    "Token",
    "TokenEvent",
    "error_envelope",
    "parse_stream_line",
]

JSONLINES = "application/jsonlines"
"""Media type of a streamed chat response: one JSON object per line."""

MAX_STOP_WORDS = 8


class _Wire(BaseModel):
    """Frozen and strict about unknown fields: a typo on either side fails loudly."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(_Wire):
    """One chat turn."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatParameters(_Wire):
    """Generation parameters; ranges follow vLLM's sampling parameters."""

    max_new_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.6, ge=0.0, le=2.0)
    top_k: int = Field(default=40, ge=0, description="0 disables top-k")
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=2.0)
    seed: int | None = Field(default=None, ge=0)
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_WORDS)
    no_retrieval: bool = False

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(not word for word in value):
            raise ValueError("stop words must be non-empty strings")
        return value


class ChatRequest(_Wire):
    """Chat role request body."""

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


class ModerationRequest(_Wire):
    """Moderation role request body: one text or a list of texts."""

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


class ModerationResponse(_Wire):
    """Moderation result: the most cautious label and one label per input."""

    label: ModerationLabel
    labels: list[ModerationLabel]


class Source(_Wire):
    """A retrieved passage as reported in ``details.sources``."""

    id: str
    title: str
    score: float


class Token(_Wire):
    """The text of one streamed token (or a few, when the backend batches them)."""

    text: str


class TokenEvent(_Wire):
    """``{"token": {"text": ...}}``: one line per relayed piece of text."""

    token: Token


class Details(_Wire):
    """What the final object reports about the generation."""

    finish_reason: str
    prompt_tokens: int = Field(ge=0)
    generated_tokens: int = Field(ge=0)
    sources: list[Source] = Field(default_factory=list)
    retrieval_error: str | None = None


class FinalEvent(_Wire):
    """The last line of a successful stream (and the whole non-streaming answer)."""

    generated_text: str
    details: Details


class ErrorBody(BaseModel):
    """The container's error: a machine-readable ``type``, a message and optional details."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: str
    message: str


class ErrorEvent(_Wire):
    """``{"error": {...}}``: the container's error envelope, also a stream's failing last line."""

    error: ErrorBody


StreamEvent = TokenEvent | FinalEvent | ErrorEvent
"""Any line of a streamed chat response."""

_STREAM_EVENT: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


def parse_stream_line(line: bytes | str) -> StreamEvent:
    """Validate one JSON line of a chat stream.

    Parameters
    ----------
    line
        The line, without its newline.

    Returns
    -------
    StreamEvent
        The token, final or error event.

    Raises
    ------
    pydantic.ValidationError
        When the line is not JSON or is none of the three events.
    """
    return _STREAM_EVENT.validate_json(line)


def error_envelope(error_type: str, message: str, **details: Any) -> dict[str, Any]:
    """The container's ``{"error": {...}}`` envelope as a JSON-ready dict.

    Parameters
    ----------
    error_type
        Machine-readable kind, e.g. ``invalid_request``.
    message
        Human-readable explanation.
    **details
        Extra fields (token counts, validation locations).

    Returns
    -------
    dict[str, Any]
        The envelope.
    """
    return ErrorEvent(error=ErrorBody(type=error_type, message=message, **details)).model_dump()
