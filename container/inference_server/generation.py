"""Chat generation: retrieval, prompt building, context-window check, streamed relay."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from chatbot_contracts.container import Details, ErrorBody, ErrorEvent, FinalEvent, Source
from inference_server.backend_client import BackendClient, CompletionStream
from inference_server.errors import InferenceError, InvalidRequestError, PromptTooLongError
from inference_server.prompting import Passage, PromptBuilder, StopTrimmer
from inference_server.protocol import ChatRequest, to_backend_params
from inference_server.retrieval import Retriever

__all__ = ["ChatService", "PreparedChat", "TokenStream"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PreparedChat:
    """Everything needed to call the backend for one chat request."""

    prompt: str
    prompt_tokens: int
    backend_params: dict[str, Any]
    stop_words: list[str]
    sources: list[Source] = field(default_factory=list)
    retrieval_error: str | None = None


def _sources(passages: list[Passage]) -> list[Source]:
    return [Source(id=p.id, title=p.title, score=round(p.score, 4)) for p in passages]


def _final(prepared: PreparedChat, text: str, finish_reason: str, tokens: int) -> FinalEvent:
    details = Details(
        finish_reason=finish_reason,
        prompt_tokens=prepared.prompt_tokens,
        generated_tokens=tokens,
        sources=prepared.sources,
        retrieval_error=prepared.retrieval_error,
    )
    return FinalEvent(generated_text=text, details=details)


def _line(event: FinalEvent | ErrorEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode() + b"\n"


def _error_line(error_type: str, message: str) -> bytes:
    return _line(ErrorEvent(error=ErrorBody(type=error_type, message=message)))


def token_line(text: str) -> bytes:
    """The ``TokenEvent`` line of ``text``.

    Built by hand rather than through the model: this runs once per token, and ``json.dumps``
    of a bare string is the fast path; a test holds it equal to the model's serialization.

    Parameters
    ----------
    text
        The relayed text.

    Returns
    -------
    bytes
        ``{"token":{"text":...}}`` and a newline.
    """
    return b'{"token":{"text":' + json.dumps(text).encode() + b"}}\n"


class TokenStream:
    """A chat answer being streamed as JSON lines; the backend stream is already open."""

    def __init__(self, prepared: PreparedChat, stream: CompletionStream) -> None:
        self._prepared = prepared
        self._stream = stream

    async def lines(self) -> AsyncIterator[bytes]:
        """Yield ``{"token": ...}`` lines, then the final object or an ``{"error": ...}`` line."""
        trimmer = StopTrimmer(self._prepared.stop_words)
        pieces: list[str] = []
        finish_reason = "stop"
        chunks_seen = 0
        reported_tokens: int | None = None
        try:
            async for chunk in self._stream.chunks():
                if chunk.text:
                    chunks_seen += 1
                if chunk.completion_tokens is not None:
                    reported_tokens = chunk.completion_tokens
                if chunk.finish_reason is not None:
                    finish_reason = chunk.finish_reason
                text = trimmer.feed(chunk.text)
                if text:
                    pieces.append(text)
                    yield token_line(text)
                if trimmer.stopped:
                    finish_reason = "stop"
                    break
            tail = trimmer.flush()
            if tail:
                pieces.append(tail)
                yield token_line(tail)
        except InferenceError as exc:
            logger.warning("stream failed after %d pieces: %s", len(pieces), exc.message)
            yield _error_line(exc.error_type, exc.message)
            return
        except Exception:
            logger.exception("stream failed")
            yield _error_line("internal_error", "internal server error")
            return
        finally:
            await self._stream.aclose()
        tokens = reported_tokens if reported_tokens is not None else chunks_seen
        yield _line(_final(self._prepared, "".join(pieces), finish_reason, tokens))


class ChatService:
    """The chat role's logic, free of HTTP types.

    Parameters
    ----------
    backend
        The model backend.
    prompts
        Renders prompts and counts tokens.
    retriever
        Passage source, or ``None`` when retrieval is off.
    max_model_len
        The context window (prompt + generated tokens).
    max_new_tokens_cap, default_max_new_tokens
        Limits on ``parameters.max_new_tokens``.
    top_k, stop_words
        Passages per question; stop words of the prompt template.
    vllm_extensions
        Whether the backend accepts vLLM's extra sampling fields.
    """

    def __init__(
        self,
        backend: BackendClient,
        prompts: PromptBuilder,
        retriever: Retriever | None,
        *,
        max_model_len: int,
        max_new_tokens_cap: int,
        default_max_new_tokens: int,
        top_k: int,
        stop_words: list[str],
        vllm_extensions: bool,
    ) -> None:
        self._backend = backend
        self._prompts = prompts
        self._retriever = retriever
        self._max_model_len = max_model_len
        self._cap = max_new_tokens_cap
        self._default_max_new_tokens = default_max_new_tokens
        self._top_k = top_k
        self._stop_words = stop_words
        self._vllm_extensions = vllm_extensions

    async def aclose(self) -> None:
        """Release the retriever's connections, if it holds any."""
        closer = getattr(self._retriever, "aclose", None)
        if closer is not None:
            await closer()

    async def _retrieve(self, request: ChatRequest) -> tuple[list[Passage], str | None]:
        if self._retriever is None or request.parameters.no_retrieval:
            return [], None
        question = request.messages()[-1].content
        try:
            return await self._retriever.search(question, self._top_k), None
        except Exception as exc:  # noqa: BLE001 - any retriever failure degrades the same way
            # A search outage should cost grounding, not the answer; details report it.
            logger.warning("retrieval failed: %r", exc)
            return [], f"{exc.__class__.__name__}: {exc}"

    async def prepare(self, request: ChatRequest) -> PreparedChat:
        """Validate limits, retrieve, render and count the prompt.

        Parameters
        ----------
        request
            The parsed chat request.

        Returns
        -------
        PreparedChat
            The backend call to make.
        """
        parameters = request.parameters
        max_new_tokens = parameters.max_new_tokens or self._default_max_new_tokens
        if max_new_tokens > self._cap:
            raise InvalidRequestError(
                f"parameters.max_new_tokens must be at most {self._cap}, got {max_new_tokens}",
                param="parameters.max_new_tokens",
            )
        passages, retrieval_error = await self._retrieve(request)
        prompt = self._prompts.render(request.messages(), passages)
        prompt_tokens = self._prompts.count_tokens(prompt)
        if prompt_tokens + max_new_tokens > self._max_model_len:
            raise PromptTooLongError(
                f"prompt ({prompt_tokens} tokens) plus max_new_tokens ({max_new_tokens}) "
                f"exceeds the context window ({self._max_model_len} tokens)",
                prompt_tokens=prompt_tokens,
                max_new_tokens=max_new_tokens,
                max_model_len=self._max_model_len,
            )
        return PreparedChat(
            prompt=prompt,
            prompt_tokens=prompt_tokens,
            backend_params=to_backend_params(
                parameters,
                max_tokens=max_new_tokens,
                extra_stop=self._stop_words,
                vllm_extensions=self._vllm_extensions,
            ),
            stop_words=list(dict.fromkeys([*parameters.stop, *self._stop_words])),
            sources=_sources(passages),
            retrieval_error=retrieval_error,
        )

    async def generate(self, prepared: PreparedChat) -> FinalEvent:
        """Run a non-streamed completion and build the final object.

        Parameters
        ----------
        prepared
            From ``prepare``.

        Returns
        -------
        FinalEvent
            The generated text and its details.
        """
        completion = await self._backend.complete(prepared.prompt, prepared.backend_params)
        trimmer = StopTrimmer(prepared.stop_words)
        text = trimmer.feed(completion.text) + trimmer.flush()
        finish_reason = "stop" if trimmer.stopped else completion.finish_reason
        tokens = (
            completion.completion_tokens
            if completion.completion_tokens is not None
            else self._prompts.count_tokens(completion.text)
        )
        return _final(prepared, text, finish_reason, tokens)

    async def open_stream(self, prepared: PreparedChat) -> TokenStream:
        """Open the backend stream (errors here still become HTTP errors).

        Parameters
        ----------
        prepared
            From ``prepare``.

        Returns
        -------
        TokenStream
            The stream to relay.
        """
        stream = await self._backend.open_stream(prepared.prompt, prepared.backend_params)
        return TokenStream(prepared, stream)
