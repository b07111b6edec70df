"""Deterministic OpenAI-compatible server whose answers and faults follow a script."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from starlette.types import Receive, Scope, Send

__all__ = ["Rule", "Script", "build_app", "main", "split_tokens"]

_WORD_TOKENS = re.compile(r"\s*\S+|\s+")
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_LAST_REQUESTS_KEPT = 100


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
        return _WORD_TOKENS.findall(text)
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


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class _Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None

    def stop_strings(self) -> list[str]:
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [stop for stop in stops if stop]

    def token_limit(self) -> int | None:
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else (self.max_tokens)
        )


class _ChatRequest(_GenerationRequest):
    messages: list[_Message] = Field(min_length=1)


class _CompletionRequest(_GenerationRequest):
    prompt: str | list[str]

    @model_validator(mode="after")
    def _prompt_not_empty_list(self) -> _CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self


class _Plan(BaseModel):
    """What one request will stream, after max_tokens and stop have cut the rule's tokens."""

    tokens: list[str]
    encoded: list[bytes]
    finish_reason: str
    prompt_tokens: int


class _Barrier:
    """A one-shot rendezvous: opens for good once ``parties`` callers have arrived."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.open = asyncio.Event()

    async def wait(self, timeout_s: float) -> bool:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.open.set()
        try:
            await asyncio.wait_for(self.open.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class _State:
    """Mutable server state: the script, rule use counts and request statistics."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.rule_uses: Counter[int] = Counter()
        self.barriers: dict[int, _Barrier] = {}
        self.requests: Counter[str] = Counter()
        self.rule_hits: Counter[str] = Counter()
        self.last_requests: deque[dict[str, Any]] = deque(maxlen=_LAST_REQUESTS_KEPT)
        self.active_streams = 0
        self.max_active_streams = 0

    def replace_script(self, script: Script) -> None:
        self.script = script
        self.rule_uses.clear()
        self.barriers.clear()

    async def pass_barrier(self, rule: Rule) -> bool:
        """Wait at the rule's barrier, if it has one; False when it timed out."""
        if rule.barrier is None:
            return True
        barrier = self.barriers.setdefault(id(rule), _Barrier(rule.barrier))
        return await barrier.wait(rule.barrier_timeout_s)

    def choose(self, endpoint: str, last_user: str, everything: str) -> Rule:
        for index, rule in enumerate(self.script.rules):
            if rule.max_uses is not None and self.rule_uses[index] >= rule.max_uses:
                continue
            if rule.matches(endpoint, last_user, everything):
                self.rule_uses[index] += 1
                self.rule_hits[rule.name or f"rule[{index}]"] += 1
                return rule
        self.rule_hits["default"] += 1
        return self.script.default

    def stats(self) -> dict[str, Any]:
        return {
            "total": sum(self.requests.values()),
            "requests": dict(self.requests),
            "rule_hits": dict(self.rule_hits),
            "active_streams": self.active_streams,
            "max_active_streams": self.max_active_streams,
            "last_requests": list(self.last_requests),
        }

    def reset_stats(self) -> None:
        self.requests.clear()
        self.rule_hits.clear()
        self.last_requests.clear()
        self.max_active_streams = self.active_streams


def _error_body(status: int, message: str, error_type: str | None) -> dict[str, Any]:
    kind = error_type or _ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


def _error_response(status: int, message: str, error_type: str | None = None) -> JSONResponse:
    return JSONResponse(_error_body(status, message, error_type), status_code=status)


def _plan(rule: Rule, request: _GenerationRequest, prompt_text: str) -> _Plan:
    tokens = rule.token_texts
    encoded = rule.encoded_tokens
    finish_reason = rule.finish_reason
    stops = request.stop_strings()
    if stops:
        full = "".join(tokens)
        cut = min((i for i in (full.find(stop) for stop in stops) if i >= 0), default=-1)
        if cut >= 0:
            kept: list[str] = []
            length = 0
            for token in tokens:
                if length + len(token) > cut:
                    if cut > length:
                        kept.append(token[: cut - length])
                    break
                kept.append(token)
                length += len(token)
            tokens = kept
            encoded = [json.dumps(token).encode() for token in kept]
            finish_reason = "stop"
    limit = request.token_limit()
    if limit is not None and len(tokens) > limit:
        tokens, encoded, finish_reason = tokens[:limit], encoded[:limit], "length"
    return _Plan(
        tokens=tokens,
        encoded=encoded,
        finish_reason=finish_reason,
        prompt_tokens=len(_WORD_TOKENS.findall(prompt_text)),
    )


def _usage(plan: _Plan, emitted: int) -> dict[str, int]:
    return {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": emitted,
        "total_tokens": plan.prompt_tokens + emitted,
    }


class ScriptedDisconnectError(Exception):
    """Raised inside a response to make the server drop the connection mid-body on purpose."""


class _TruncatedResponse(Response):
    """A response that announces its full length, sends half of it, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        half = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": half, "more_body": True})
        raise ScriptedDisconnectError("scripted disconnect before the response completed")


class _HideScriptedDisconnects(logging.Filter):
    """Keep the server log free of the tracebacks of disconnects that a script asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ScriptedDisconnectError)


def _barrier_message(rule: Rule) -> str:
    return f"barrier of {rule.barrier} answers not reached within {rule.barrier_timeout_s} s"


def _sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_DONE = b"data: [DONE]\n\n"


async def _stream(
    state: _State,
    rule: Rule,
    plan: _Plan,
    *,
    kind: Literal["chat", "completions"],
    request_id: str,
    model: str,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Yield SSE chunks in the OpenAI shapes for one scripted answer."""
    created = int(time.time())
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    head = {"id": request_id, "object": obj, "created": created, "model": model}
    head_bytes = json.dumps(head, separators=(",", ":")).encode()[:-1]
    usage_null = b',"usage":null' if include_usage else b""
    if kind == "chat":
        prefix = head_bytes + b',"choices":[{"index":0,"delta":{"content":'
        suffix = b'},"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    else:
        prefix = head_bytes + b',"choices":[{"index":0,"text":'
        suffix = b',"logprobs":null,"finish_reason":null}]' + usage_null + b"}\n\n"
    prefix = b"data: " + prefix

    state.active_streams += 1
    state.max_active_streams = max(state.max_active_streams, state.active_streams)
    try:
        if rule.first_token_delay_s:
            await asyncio.sleep(rule.first_token_delay_s)
        if kind == "chat":
            role_chunk = dict(head)
            role_chunk["choices"] = [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": ""},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ]
            if include_usage:
                role_chunk["usage"] = None
            yield _sse_event(role_chunk)
        if not await state.pass_barrier(rule):
            yield _sse_event(_error_body(500, _barrier_message(rule), None))
            yield _DONE
            return
        emitted = 0
        for encoded in plan.encoded:
            if rule.fail_after_tokens is not None and emitted >= rule.fail_after_tokens:
                break
            if emitted and rule.token_delay_s:
                await asyncio.sleep(rule.token_delay_s)
            yield prefix + encoded + suffix
            emitted += 1
        if rule.fail_after_tokens is not None and rule.fail_after_tokens <= len(plan.encoded):
            if rule.fail_mode == "disconnect":
                raise ScriptedDisconnectError(f"scripted disconnect after {emitted} tokens")
            yield _sse_event(_error_body(500, rule.error_message, rule.error_type))
            yield _DONE
            return
        final = dict(head)
        if kind == "chat":
            choice: dict[str, Any] = {"index": 0, "delta": {}}
        else:
            choice = {"index": 0, "text": ""}
        choice |= {"logprobs": None, "finish_reason": plan.finish_reason}
        final["choices"] = [choice]
        if include_usage:
            final["usage"] = None
        yield _sse_event(final)
        if include_usage:
            yield _sse_event(head | {"choices": [], "usage": _usage(plan, emitted)})
        yield _DONE
    finally:
        state.active_streams -= 1


def _complete(
    rule: Rule,
    plan: _Plan,
    *,
    kind: Literal["chat", "completions"],
    request_id: str,
    model: str,
) -> Response:
    text = "".join(plan.tokens)
    if kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": None,
            "finish_reason": plan.finish_reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": plan.finish_reason}
        obj = "text_completion"
    body = {
        "id": request_id,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": _usage(plan, len(plan.tokens)),
    }
    if rule.fail_after_tokens is not None and rule.fail_after_tokens <= len(plan.tokens):
        if rule.fail_mode == "disconnect":
            return _TruncatedResponse(json.dumps(body), media_type="application/json")
        return _error_response(500, rule.error_message, rule.error_type)
    return JSONResponse(body)


def build_app(script: Script | None = None) -> FastAPI:
    """Build the scripted OpenAI-compatible server.

    Parameters
    ----------
    script
        The rules to answer with; the default script answers every request with one
        fixed sentence.

    Returns
    -------
    FastAPI
        The app: ``/health``, ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``,
        ``/tokenize``, and for tests ``PUT|GET /_script``, ``GET|DELETE /_stats``.
    """
    state = _State(script or Script())
    server_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideScriptedDisconnects) for f in server_log.filters):
        server_log.addFilter(_HideScriptedDisconnects())
    app = FastAPI(title="Scripted OpenAI-compatible backend", docs_url=None, redoc_url=None)
    app.state.scripted = state

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(400, str(exc.errors()))

    async def _read_json(request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = json.loads(await request.body())
        except json.JSONDecodeError as exc:
            return _error_response(400, f"request body is not JSON: {exc}")
        if not isinstance(body, dict):
            return _error_response(400, "request body must be a JSON object")
        state.last_requests.append({"path": request.url.path, "body": body})
        return body

    async def _generate(
        request: Request, kind: Literal["chat", "completions"]
    ) -> Response | StreamingResponse:
        state.requests[kind] += 1
        body = await _read_json(request)
        if isinstance(body, JSONResponse):
            return body
        parsed: _GenerationRequest
        try:
            if kind == "chat":
                chat = _ChatRequest.model_validate(body)
                users = [m.text() for m in chat.messages if m.role == "user"]
                last_user = users[-1] if users else ""
                everything = "\n".join(m.text() for m in chat.messages)
                parsed = chat
            else:
                completion = _CompletionRequest.model_validate(body)
                prompt = completion.prompt
                last_user = everything = prompt if isinstance(prompt, str) else prompt[0]
                parsed = completion
        except ValidationError as exc:
            return _error_response(400, str(exc))
        rule = state.choose(kind, last_user, everything)
        if rule.http_status is not None:
            return _error_response(rule.http_status, rule.error_message, rule.error_type)
        plan = _plan(rule, parsed, everything)
        model = parsed.model or state.script.model
        request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if parsed.stream:
            include_usage = parsed.stream_options is not None and (
                parsed.stream_options.include_usage
            )
            return StreamingResponse(
                _stream(
                    state,
                    rule,
                    plan,
                    kind=kind,
                    request_id=request_id,
                    model=model,
                    include_usage=include_usage,
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        if not await state.pass_barrier(rule):
            return _error_response(500, _barrier_message(rule))
        delay = rule.first_token_delay_s + rule.token_delay_s * max(len(plan.tokens) - 1, 0)
        if delay:
            await asyncio.sleep(delay)
        return _complete(rule, plan, kind=kind, request_id=request_id, model=model)

    @app.get("/health")
    async def health() -> Response:
        state.requests["health"] += 1
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        state.requests["models"] += 1
        return {
            "object": "list",
            "data": [
                {
                    "id": state.script.model,
                    "object": "model",
                    "created": 0,
                    "owned_by": "scripted",
                    "max_model_len": state.script.max_model_len,
                }
            ],
        }

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await _generate(request, "chat")

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await _generate(request, "completions")

    @app.post("/tokenize", response_model=None)
    async def tokenize(request: Request) -> Response | dict[str, Any]:
        # vLLM's /tokenize shape, so callers can check prompt length against the context window.
        state.requests["tokenize"] += 1
        body = await _read_json(request)
        if isinstance(body, JSONResponse):
            return body
        if isinstance(body.get("prompt"), str):
            text = body["prompt"]
        elif isinstance(body.get("messages"), list):
            try:
                messages = [_Message.model_validate(m) for m in body["messages"]]
            except ValidationError as exc:
                return _error_response(400, str(exc))
            text = "\n".join(m.text() for m in messages)
        else:
            return _error_response(400, "tokenize needs 'prompt' (string) or 'messages'")
        pieces = _WORD_TOKENS.findall(text)
        return {
            "count": len(pieces),
            "max_model_len": state.script.max_model_len,
            "tokens": list(range(len(pieces))),
        }

    @app.put("/_script")
    async def put_script(new_script: Script) -> dict[str, Any]:
        state.replace_script(new_script)
        return new_script.model_dump()

    @app.get("/_script")
    async def get_script() -> dict[str, Any]:
        return state.script.model_dump()

    @app.get("/_stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @app.delete("/_stats")
    async def reset_stats() -> Response:
        state.reset_stats()
        return Response(status_code=204)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the scripted backend under uvicorn (``python -m local.scripted_backend``)."""
    parser = argparse.ArgumentParser(prog="python -m local.scripted_backend", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--script", type=Path, help="JSON file holding a Script")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    script = Script.from_file(args.script) if args.script else Script()

    uvicorn.run(
        build_app(script),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
