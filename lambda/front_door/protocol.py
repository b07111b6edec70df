"""OpenAI-compatible request/response models, the chatbot extensions, the container request."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from chatbot_contracts.container import ChatParameters, ChatRequest, Message

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{8,64}$"
StopWord = Annotated[str, Field(min_length=1)]

REFUSED_PARAMETERS: dict[str, str] = {
    "tools": "tool calling is not supported by this chatbot",
    "tool_choice": "tool calling is not supported by this chatbot (only 'none')",
    "functions": "function calling is not supported by this chatbot",
    "function_call": "function calling is not supported by this chatbot (only 'none')",
    "logprobs": "log-probabilities are not returned by this chatbot (only false)",
    "top_logprobs": "log-probabilities are not returned by this chatbot",
    "n": "only one choice per request is generated (n must be 1)",
    "audio": "audio output is not supported (text only)",
    "modalities": "only the 'text' modality is supported",
    "response_format": "only {'type': 'text'} is supported: the backends cannot constrain "
    "output to JSON end to end, so a JSON format would be silently ignored",
    "prediction": "predicted outputs are not supported",
    "frequency_penalty": "frequency_penalty is not supported (only 0)",
    "presence_penalty": "presence_penalty is not supported (only 0)",
    "logit_bias": "logit_bias is not supported",
    "reasoning_effort": "the chat model is not a reasoning model",
    "verbosity": "verbosity is not supported",
    "web_search_options": "web search is not supported",
}
"""OpenAI request fields we cannot honour, with the reason the 400 gives (docs/front_door.md)."""


def _asks_for_something(name: str, value: Any) -> bool:
    """Whether a value of a refused field asks for behaviour (``None``, ``false``, 0... do not)."""
    if value is None:
        return False
    harmless: list[Any] = [[], {}]
    if name in {"tool_choice", "function_call"}:
        harmless = ["none"]
    elif name == "n":
        harmless = [1]
    elif name == "modalities":
        harmless = [["text"]]
    elif name == "response_format":
        harmless = [{"type": "text"}]
    elif name in {"frequency_penalty", "presence_penalty"}:
        harmless = [0]
    elif name == "logprobs":
        return value is not False
    elif name == "web_search_options":
        return True  # {} turns web search on with its defaults
    return all(value != candidate or type(value) is bool for candidate in harmless)


class TextContentPart(BaseModel):
    """One text part of a multi-part message content (the OpenAI ``content: [...]`` form)."""

    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    """One message of a chat request."""

    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextContentPart]

    def text(self) -> str:
        """The message's content as one string."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def container_role(self) -> Literal["system", "user", "assistant"]:
        """The role the container's chat template knows (``developer`` is a system message)."""
        return "system" if self.role == "developer" else self.role


class StreamOptions(BaseModel):
    """OpenAI ``stream_options``; ``include_usage`` adds a usage chunk before ``[DONE]``."""

    model_config = ConfigDict(extra="ignore", strict=True)

    include_usage: bool = False
    include_obfuscation: bool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions`` body: the OpenAI fields we honour plus our extensions.

    Fields of OpenAI's API that we cannot honour (:data:`REFUSED_PARAMETERS`) are refused by
    name when they ask for something; fields without effect here (``user``, ``metadata``,
    ``store``...) are accepted; unknown fields are ignored so that any OpenAI client works
    unchanged. Known fields are strictly typed (``"seed": false`` is an error, not 0), as
    OpenAI's API does.
    """

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = Field(default=None, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: StopWord | Annotated[list[StopWord], Field(max_length=4)] | None = None
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    session_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    retrieval: bool = True

    tools: Any = Field(default=None, description="Refused unless empty.")
    tool_choice: Any = Field(default=None, description="Refused unless 'none'.")
    functions: Any = Field(default=None, description="Refused unless empty.")
    function_call: Any = Field(default=None, description="Refused unless 'none'.")
    logprobs: Any = Field(default=None, description="Refused unless false.")
    top_logprobs: Any = Field(default=None, description="Refused.")
    n: Any = Field(default=None, description="Refused unless 1.")
    audio: Any = Field(default=None, description="Refused.")
    modalities: Any = Field(default=None, description="Refused unless ['text'].")
    response_format: Any = Field(default=None, description="Refused unless {'type': 'text'}.")
    prediction: Any = Field(default=None, description="Refused.")
    frequency_penalty: Any = Field(default=None, description="Refused unless 0.")
    presence_penalty: Any = Field(default=None, description="Refused unless 0.")
    logit_bias: Any = Field(default=None, description="Refused unless empty.")
    reasoning_effort: Any = Field(default=None, description="Refused.")
    verbosity: Any = Field(default=None, description="Refused.")
    web_search_options: Any = Field(default=None, description="Refused.")

    @field_validator(*REFUSED_PARAMETERS)
    @classmethod
    def _refuse_unsupported(cls, value: Any, info: Any) -> Any:
        name = str(info.field_name)
        if _asks_for_something(name, value):
            raise PydanticCustomError(
                "unsupported_parameter",
                "{param} is not supported: {reason}",
                {"param": name, "reason": REFUSED_PARAMETERS[name]},
            )
        return value

    @model_validator(mode="after")
    def _ends_with_user_turn(self) -> ChatCompletionRequest:
        if self.messages[-1].role != "user":
            raise ValueError("the last message must have role 'user'")
        return self

    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk (``stream_options``)."""
        return self.stream_options is not None and self.stream_options.include_usage

    def stop_sequences(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def requested_max_tokens(self, default: int) -> int:
        """The completion-token budget asked for, or ``default``."""
        return self.max_completion_tokens or self.max_tokens or default

    def to_container_request(
        self, history: list[dict[str, str]], *, max_new_tokens: int, stream: bool
    ) -> ChatRequest:
        """The container protocol request (ARCHITECTURE.md "Container protocol").

        Parameters
        ----------
        history
            Stored messages (``role``, ``content``) that precede this request's messages.
        max_new_tokens
            Completion budget, already bounded by the settings.
        stream
            Whether the container should stream tokens as JSON lines.

        Returns
        -------
        ChatRequest
            The contracts' model, validated here as the container will validate it.
        """
        inputs = [Message.model_validate(m) for m in history]
        inputs += [Message(role=m.container_role(), content=m.text()) for m in self.messages]
        parameters: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "no_retrieval": not self.retrieval,
        }
        if self.temperature is not None:
            parameters["temperature"] = self.temperature
        if self.top_p is not None:
            parameters["top_p"] = self.top_p
        if self.stop is not None:
            parameters["stop"] = self.stop_sequences()
        if self.seed is not None:
            parameters["seed"] = self.seed
        return ChatRequest(
            inputs=inputs, parameters=ChatParameters.model_validate(parameters), stream=stream
        )


class Source(BaseModel):
    """A retrieval source the container used for the answer."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    title: str | None = None
    score: float | None = None


class ModerationLabels(BaseModel):
    """Moderation verdicts of the turn (``None`` where no check ran)."""

    input: str | None = None
    output: str | None = None


class Usage(BaseModel):
    """Token counts reported by the container."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    """The assistant message of a non-streaming response."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The single choice of a non-streaming response."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str


class ChatbotExtension(BaseModel):
    """Our additions to OpenAI's shapes, under one key (``chatbot``) that shadows no field.

    Every streamed chunk carries ``session_id``; the non-streaming response and the chunk
    with ``finish_reason`` also carry ``moderation`` and ``sources``.
    """

    session_id: str
    moderation: ModerationLabels | None = None
    sources: list[Source] | None = None
    retrieval_error: str | None = Field(
        default=None, description="Why the answer has no sources: retrieval failed."
    )


class ChatCompletion(BaseModel):
    """Non-streaming ``chat.completion`` response with the chatbot's extension."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    chatbot: ChatbotExtension


class ChunkDelta(BaseModel):
    """Incremental content of a streaming chunk."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """The single choice of a streaming chunk."""

    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE ``chat.completion.chunk`` event (documents the stream's shape).

    The chunk with ``finish_reason`` carries moderation and sources in ``chatbot``; with
    ``stream_options.include_usage`` a last chunk with no choices carries ``usage``.
    """

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    chatbot: ChatbotExtension


class ModelCard(BaseModel):
    """One entry of ``GET /v1/models`` in OpenAI's shape."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    """``GET /v1/models``: the models a client may name (the one chat model)."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class SessionMessage(BaseModel):
    """A stored message of a session."""

    seq: int
    role: str
    content: str
    created_at: str
    finish_reason: str | None = None
    moderation: str | None = None
    sources: list[Source] | None = None
    incomplete: bool | None = None


class SessionSummary(BaseModel):
    """A session as listed by ``GET /v1/sessions``."""

    session_id: str
    title: str
    created_at: str
    updated_at: str
    message_count: int


class SessionDetail(SessionSummary):
    """``GET /v1/sessions/{id}``: the session and its messages, oldest first."""

    messages: list[SessionMessage]


class SessionList(BaseModel):
    """A page of the caller's sessions, newest first; pass ``next_cursor`` as ``cursor``."""

    object: Literal["list"] = "list"
    data: list[SessionSummary]
    has_more: bool
    next_cursor: str | None = None


class SessionDeleted(BaseModel):
    """``DELETE /v1/sessions/{id}`` response."""

    session_id: str
    deleted: bool = True


class Health(BaseModel):
    """``GET /healthz`` response."""

    status: Literal["ok"] = "ok"
