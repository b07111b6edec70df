"""The scripted backend's OpenAI wire protocol: request models, plans, SSE and JSON bodies."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import Receive, Scope, Send

from local.scripted_backend.script import WORD_TOKENS, Rule, Script

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
_DONE = b"data: [DONE]\n\n"
_LAST_REQUESTS_KEPT = 100


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class Message(BaseModel):
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


class _StructuredOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    choice: list[str] = Field(min_length=1)


class GenerationRequest(BaseModel):
    """The fields of an OpenAI generation request that the scripted backend acts on."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: _StreamOptions | None = None
    # vLLM's constrained decoding (0.12+), and its older spelling: the answer is one choice.
    structured_outputs: _StructuredOutputs | None = None
    guided_choice: list[str] | None = Field(default=None, min_length=1)

    def stop_strings(self) -> list[str]:
        """``stop`` as a list without empty strings."""
        if self.stop is None:
            return []
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return [stop for stop in stops if stop]

    def token_limit(self) -> int | None:
        """The completion-token budget asked for, if any."""
        return (
            self.max_completion_tokens
            if self.max_completion_tokens is not None
            else (self.max_tokens)
        )

    def choices(self) -> list[str] | None:
        """The choice list the answer is constrained to, if the request has one."""
        if self.structured_outputs is not None:
            return self.structured_outputs.choice
        return self.guided_choice


def constrain_to_choices(rule: Rule, request: GenerationRequest) -> Rule | str:
    """The rule as a constrained engine would answer it, or why it cannot.

    With a choice list (vLLM's ``structured_outputs.choice`` or ``guided_choice``) an engine
    emits exactly one of the choices and nothing around it: a rule whose answer is a choice
    once surrounding whitespace is dropped (free-text scripts answer ``" casual"``) answers
    exactly that choice. Any other answer is a mistake in the script, reported as a 400
    rather than answered anyway.

    Parameters
    ----------
    rule
        The rule chosen for the request.
    request
        The parsed request.

    Returns
    -------
    Rule | str
        The rule to answer with (``rule`` itself without a choice list), or the error message.
    """
    choices = request.choices()
    if choices is None or rule.http_status is not None:
        return rule
    answer = "".join(rule.token_texts).strip()
    if answer not in choices:
        return f"scripted answer {answer!r} is not one of the requested choices {choices}"
    return Rule.model_validate(rule.model_dump() | {"response": answer, "tokens": [answer]})


class ChatRequest(GenerationRequest):
    """``POST /v1/chat/completions`` body."""

    messages: list[Message] = Field(min_length=1)


class CompletionRequest(GenerationRequest):
    """``POST /v1/completions`` body."""

    prompt: str | list[str]

    @model_validator(mode="after")
    def _prompt_not_empty_list(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be empty")
        return self


class Plan(BaseModel):
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


class State:
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


def error_body(status: int, message: str, error_type: str | None) -> dict[str, Any]:
    kind = error_type or _ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


def error_response(status: int, message: str, error_type: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, error_type), status_code=status)


def plan_answer(rule: Rule, request: GenerationRequest, prompt_text: str) -> Plan:
    """Cut the rule's tokens at the first stop string and at the token budget.

    Parameters
    ----------
    rule
        The rule that answers.
    request
        The parsed request (``stop``, ``max_tokens``).
    prompt_text
        The prompt, counted in scripted tokens for usage.

    Returns
    -------
    Plan
        The tokens to send and the finish reason.
    """
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
    return Plan(
        tokens=tokens,
        encoded=encoded,
        finish_reason=finish_reason,
        prompt_tokens=len(WORD_TOKENS.findall(prompt_text)),
    )


def _usage(plan: Plan, emitted: int) -> dict[str, int]:
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


class HideScriptedDisconnects(logging.Filter):
    """Keep the server log free of the tracebacks of disconnects that a script asked for."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ScriptedDisconnectError)


def barrier_message(rule: Rule) -> str:
    return f"barrier of {rule.barrier} answers not reached within {rule.barrier_timeout_s} s"


def _sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def stream_answer(
    state: State,
    rule: Rule,
    plan: Plan,
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
            yield _sse_event(error_body(500, barrier_message(rule), None))
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
            yield _sse_event(error_body(500, rule.error_message, rule.error_type))
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


def complete(
    rule: Rule,
    plan: Plan,
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
        return error_response(500, rule.error_message, rule.error_type)
    return JSONResponse(body)
