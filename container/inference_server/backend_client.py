"""Async client for the model backend's OpenAI-compatible HTTP API (vLLM, transformers serve).

It uses aiohttp rather than httpx: every generated token of every stream passes through
``CompletionStream.chunks``, and aiohttp's C parser reads a streamed event for about a fifth of
httpx's CPU (7 vs 31-37 us per token at 16 streams, measured on this repository's 2-core
machine), which is most of what separates our relay from the bare floor of
``bench/container.py``. vLLM's images ship aiohttp already.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from inference_server.errors import BackendError, BackendUnavailableError

__all__ = ["BackendClient", "Completion", "CompletionChunk", "CompletionStream"]

_SSE_DATA_BYTES = b"data:"
_DONE_BYTES = b"[DONE]"
_JSON_HEADERS = {"Content-Type": "application/json"}
# Connection errors, broken bodies and aiohttp's own timeouts (which are TimeoutErrors).
_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


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

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def chunks(self) -> AsyncIterator[CompletionChunk]:
        """Yield text chunks until ``[DONE]``; a broken stream raises ``BackendError``."""
        saw_finish = False
        done = False
        pending = b""
        try:
            # Splitting raw bytes ourselves is cheaper than a line reader, and this loop runs
            # once per generated token of every stream.
            async for raw in self._response.content.iter_any():
                if done:
                    # Read the body to its end so the pooled connection is reused; a response
                    # closed before its end closes the connection.
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
        except _TRANSPORT_ERRORS as exc:
            raise BackendError(f"backend stream broke off: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise BackendError("backend sent a malformed stream event") from exc
        if not saw_finish:
            raise BackendError("backend stream ended without a finish reason")

    async def aclose(self) -> None:
        """Close the response: the connection goes back to the pool when the body was read to
        its end, and is closed otherwise (the backend sees the disconnect and stops generating)."""
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


class BackendClient:
    """Talks to one OpenAI-compatible backend over a pooled HTTP/1.1 connection set.

    The aiohttp session is created on first use, inside the running event loop.

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
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                # connect: waiting for a pooled connection and opening one; sock_read: the
                # longest pause between two reads (a long prompt's prefill).
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=60.0, sock_connect=5.0, sock_read=600.0
                ),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

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
            async with self._http().get(
                f"{self.base_url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                await response.read()
                return response.status == 200
        except _TRANSPORT_ERRORS:
            return False

    def _body(self, prompt: str, params: dict[str, Any], *, stream: bool) -> bytes:
        body: dict[str, Any] = {"model": self.model, "prompt": prompt, "stream": stream, **params}
        if stream:
            # vLLM reports usage in the last chunk only when asked.
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

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
            async with self._http().post(
                f"{self.base_url}/v1/completions",
                data=self._body(prompt, params, stream=False),
                headers=_JSON_HEADERS,
            ) as response:
                status, content = response.status, await response.read()
        except _TRANSPORT_ERRORS as exc:
            raise BackendUnavailableError(f"backend unreachable: {exc.__class__.__name__}") from exc
        if status != 200:
            raise BackendError(f"backend answered {status}: {_error_message(content)}")
        try:
            payload = json.loads(content)
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
        try:
            response = await self._http().post(
                f"{self.base_url}/v1/completions",
                data=self._body(prompt, params, stream=True),
                headers=_JSON_HEADERS,
            )
        except _TRANSPORT_ERRORS as exc:
            raise BackendUnavailableError(f"backend unreachable: {exc.__class__.__name__}") from exc
        if response.status != 200:
            try:
                content = await response.read()
            except _TRANSPORT_ERRORS:
                content = b""
            finally:
                response.release()
            raise BackendError(f"backend answered {response.status}: {_error_message(content)}")
        return CompletionStream(response)
