"""Async client for the model backend's OpenAI-compatible HTTP API (vLLM, transformers serve)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from inference_server.errors import BackendError, BackendUnavailableError

__all__ = ["BackendClient", "Completion", "CompletionChunk", "CompletionStream"]

_SSE_DATA_BYTES = b"data:"
_DONE_BYTES = b"[DONE]"


@dataclass(frozen=True, slots=True)
class CompletionChunk:
    """One streamed piece of text; the last carries ``finish_reason`` and maybe usage."""

    text: str
    finish_reason: str | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole (non-streamed) completion."""

    text: str
    finish_reason: str
    completion_tokens: int | None


def _error_message(body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")[:500]
    if isinstance(payload, dict):
        error = payload.get("error")
        if isinstance(error, dict):
            return str(error.get("message", error))
        if error is not None:
            return str(error)
        if "detail" in payload:
            return str(payload["detail"])
    return str(payload)[:500]


def _parse_choice(payload: dict[str, Any]) -> CompletionChunk:
    if "error" in payload:
        message = _error_message(json.dumps(payload).encode())
        raise BackendError(f"backend error in stream: {message}")
    choices = payload.get("choices") or []
    usage = payload.get("usage") or {}
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    if not choices:
        return CompletionChunk(text="", completion_tokens=tokens)
    choice = choices[0]
    return CompletionChunk(
        text=choice.get("text") or "",
        finish_reason=choice.get("finish_reason"),
        completion_tokens=tokens,
    )


class CompletionStream:
    """An open streamed completion: headers already checked, chunks still to read.

    Opening the stream before the HTTP response to our client starts is what lets a backend
    refusal become a clean 4xx/5xx instead of an error line.
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    async def chunks(self) -> AsyncIterator[CompletionChunk]:
        """Yield text chunks until ``[DONE]``; a broken stream raises ``BackendError``."""
        saw_finish = False
        done = False
        pending = b""
        try:
            # Splitting raw bytes ourselves costs a fraction of httpx's text line decoder, and
            # this loop runs once per generated token of every stream.
            async for raw in self._response.aiter_bytes():
                if done:
                    # Read the body to its end so the pooled connection is reused; leaving
                    # it unread makes httpx close the connection.
                    continue
                pending += raw
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not line.startswith(_SSE_DATA_BYTES):
                        continue
                    data = line[len(_SSE_DATA_BYTES) :].strip()
                    if data == _DONE_BYTES:
                        done = True
                        break
                    chunk = _parse_choice(json.loads(data))
                    saw_finish = saw_finish or chunk.finish_reason is not None
                    yield chunk
        except httpx.HTTPError as exc:
            raise BackendError(f"backend stream broke off: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise BackendError("backend sent a malformed stream event") from exc
        if not saw_finish:
            raise BackendError("backend stream ended without a finish reason")

    async def aclose(self) -> None:
        """Close the response (stops generation on the backend when it sees the disconnect)."""
        await self._response.aclose()


class BackendClient:
    """Talks to one OpenAI-compatible backend over a pooled HTTP/1.1 connection set.

    Parameters
    ----------
    base_url
        e.g. ``http://127.0.0.1:8081``.
    model
        The model name the backend serves (vLLM's ``--served-model-name``).
    max_connections
        Pool size; bounded only to protect the backend, there is no global lock.
    """

    def __init__(self, base_url: str, model: str, *, max_connections: int = 512) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=httpx.Timeout(connect=5.0, read=600.0, write=30.0, pool=60.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def healthy(self, timeout_s: float = 2.0) -> bool:
        """Tell whether the backend answers its health check.

        Parameters
        ----------
        timeout_s
            How long to wait for the answer.

        Returns
        -------
        bool
            ``True`` on a 200 from ``/health``.
        """
        try:
            response = await self._client.get("/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _body(self, prompt: str, params: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "stream": stream, **params}
        return body

    async def complete(self, prompt: str, params: dict[str, Any]) -> Completion:
        """Run one completion to its end.

        Parameters
        ----------
        prompt
            The fully rendered prompt.
        params
            OpenAI completion fields (``max_tokens``, ``temperature``, ``stop``...).

        Returns
        -------
        Completion
            Text, finish reason and generated token count when the backend reports it.
        """
        try:
            response = await self._client.post(
                "/v1/completions", json=self._body(prompt, params, stream=False)
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"backend unreachable: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise BackendError(
                f"backend answered {response.status_code}: {_error_message(response.content)}"
            )
        try:
            payload = response.json()
        except ValueError as exc:
            raise BackendError("backend answered with malformed JSON") from exc
        chunk = _parse_choice(payload)
        return Completion(
            text=chunk.text,
            finish_reason=chunk.finish_reason or "stop",
            completion_tokens=chunk.completion_tokens,
        )

    async def open_stream(self, prompt: str, params: dict[str, Any]) -> CompletionStream:
        """Start a streamed completion and check the backend accepted it.

        Parameters
        ----------
        prompt
            The fully rendered prompt.
        params
            OpenAI completion fields.

        Returns
        -------
        CompletionStream
            The open stream; the caller must ``aclose()`` it.
        """
        body = self._body(prompt, params, stream=True)
        # vLLM reports usage in the last chunk only when asked.
        body["stream_options"] = {"include_usage": True}
        request = self._client.build_request("POST", "/v1/completions", json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise BackendUnavailableError(f"backend unreachable: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            content = await response.aread()
            await response.aclose()
            raise BackendError(
                f"backend answered {response.status_code}: {_error_message(content)}"
            )
        return CompletionStream(response)
