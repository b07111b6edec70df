"""HTTP routes: parse, call the chat service or session store, map results to responses."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from chatbot_contracts.front_door import OpenAIErrorEnvelope
from chatbot_contracts.metrics import Metric
from front_door.chat import ChatService, Delta, Failure, Finish, Turn
from front_door.errors import (
    DeleteIncompleteError,
    FrontDoorError,
    ModelNotFoundError,
    ModelWakingUpError,
    SessionNotFoundError,
)
from front_door.observability import RequestMetrics, bind_log_context
from front_door.principal import request_id, resolve_principal
from front_door.protocol import (
    SESSION_ID_PATTERN,
    ChatCompletion,
    ChatCompletionRequest,
    Health,
    ModelCard,
    ModelList,
    SessionDeleted,
    SessionDetail,
    SessionList,
    SessionMessage,
    SessionSummary,
    Source,
)
from front_door.sessions import SessionHeader, SessionStore
from front_door.settings import Settings

router = APIRouter()

SESSION_ID_HEADER = "X-Chatbot-Session-Id"
"""Response header naming the turn's session (also in the body's ``chatbot.session_id``)."""
_STARTED = int(time.time())

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
_DONE = b"data: [DONE]\n\n"
_SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One server-sent event.",
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "description": "A chat.completion.chunk (JSON), an error envelope with "
            "chatbot.session_id (JSON) after a mid-stream failure, or the literal [DONE].",
        },
    },
    "required": ["data"],
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": OpenAIErrorEnvelope} for status in statuses}


async def caller(request: Request) -> str:
    """Dependency: the calling principal; also binds the request id to the log context.

    Parameters
    ----------
    request
        The incoming request.

    Returns
    -------
    str
        The principal.
    """
    bind_log_context(request_id=request_id(request.headers) or uuid.uuid4().hex)
    settings: Settings = request.app.state.settings
    return resolve_principal(settings, request.headers)


Principal = Annotated[str, Depends(caller)]


class EventStreamResponse(StreamingResponse):
    """SSE response that always closes its event generator, so the turn is stored even when
    the client disconnects (Starlette may otherwise leave it to the garbage collector)."""

    def __init__(self, events: AsyncGenerator[bytes, None], session_id: str) -> None:
        super().__init__(
            events,
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
                SESSION_ID_HEADER: session_id,
            },
        )
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self._events.aclose()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _chunk(
    turn: Turn,
    model: str,
    delta: dict[str, str],
    *,
    finish_reason: str | None = None,
    chatbot: dict[str, Any] | None = None,
    include_usage: bool = False,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": turn.completion_id,
        "object": "chat.completion.chunk",
        "created": turn.created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if include_usage:
        chunk["usage"] = None  # as OpenAI: null on every chunk but the usage chunk
    chunk["chatbot"] = chatbot or {"session_id": turn.session_id}
    return chunk


def _extension(turn: Turn, finish: Finish) -> dict[str, Any]:
    extension: dict[str, Any] = {
        "session_id": turn.session_id,
        "moderation": finish.moderation,
        "sources": finish.sources,
        "retrieval_error": finish.retrieval_error,  # set: answered without sources, and why
    }
    return extension


def _usage(finish: Finish) -> dict[str, int]:
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    usage.update(finish.usage)
    return usage


async def _sse_events(service: ChatService, turn: Turn, model: str) -> AsyncGenerator[bytes, None]:
    events = service.events(turn)
    include_usage = turn.request.include_usage()
    first = True
    try:
        async for event in events:
            if isinstance(event, Delta):
                delta = {"content": event.text}
                if first:
                    delta["role"] = "assistant"
                first = False
                yield _sse(_chunk(turn, model, delta, include_usage=include_usage))
            elif isinstance(event, Finish):
                yield _sse(
                    _chunk(
                        turn,
                        model,
                        {"role": "assistant"} if first else {},
                        finish_reason=event.finish_reason,
                        chatbot=_extension(turn, event),
                        include_usage=include_usage,
                    )
                )
                if include_usage:
                    usage_chunk = _chunk(turn, model, {})
                    usage_chunk["choices"] = []
                    usage_chunk["usage"] = _usage(event)
                    usage_chunk["chatbot"] = {"session_id": turn.session_id}
                    yield _sse(usage_chunk)
            else:
                body = event.error.envelope()
                body["chatbot"] = {"session_id": turn.session_id}
                yield _sse(body)
        yield _DONE
    finally:
        with anyio.CancelScope(shield=True):
            await events.aclose()


async def _complete(service: ChatService, turn: Turn, model: str) -> ChatCompletion:
    parts: list[str] = []
    events = service.events(turn)
    try:
        async for event in events:
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Failure):
                raise event.error
            elif isinstance(event, Finish):
                return ChatCompletion.model_validate(
                    {
                        "id": turn.completion_id,
                        "created": turn.created,
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "".join(parts)},
                                "finish_reason": event.finish_reason,
                            }
                        ],
                        "usage": _usage(event),
                        "chatbot": _extension(turn, event),
                    }
                )
    finally:
        await events.aclose()
    raise FrontDoorError("The turn ended without a result.")


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    """Liveness/readiness for the Lambda Web Adapter."""
    return Health()


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    tags=["chat"],
    responses={
        200: {
            "description": "A chat.completion, or with stream=true an SSE stream of "
            "chat.completion.chunk events ending with `data: [DONE]`.",
            "content": {"text/event-stream": {"schema": _SSE_EVENT_SCHEMA}},
        },
        **_errors(400, 401, 404, 409, 413, 429, 502, 503, 504),
    },
)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, principal: Principal
) -> Response:
    """OpenAI-compatible chat completion with server-side sessions and moderation."""
    service: ChatService = request.app.state.chat_service
    settings: Settings = request.app.state.settings
    model = body.model or settings.chat_endpoint
    metrics = RequestMetrics()
    try:
        turn = await service.start_turn(body, principal, metrics)
    except FrontDoorError as exc:
        metrics.add("Errors", "Count", 1)
        if isinstance(exc, ModelWakingUpError):
            metrics.add(Metric.MODEL_WAKING_UP, Metric.MODEL_WAKING_UP.unit, 1)
        metrics.flush()
        raise
    if body.stream:
        return EventStreamResponse(_sse_events(service, turn, model), turn.session_id)
    completion = await _complete(service, turn, model)
    return JSONResponse(
        completion.model_dump(mode="json"), headers={SESSION_ID_HEADER: turn.session_id}
    )


def _model_card(settings: Settings) -> ModelCard:
    return ModelCard(id=settings.chat_endpoint, created=_STARTED, owned_by="chatbot")


@router.get("/v1/models", response_model=ModelList, tags=["models"], responses=_errors(401))
async def list_models(request: Request, principal: Principal) -> ModelList:
    """The chat model, in OpenAI's list shape (any ``model`` value in a request selects it)."""
    return ModelList(data=[_model_card(request.app.state.settings)])


@router.get(
    "/v1/models/{model_id}", response_model=ModelCard, tags=["models"], responses=_errors(401, 404)
)
async def retrieve_model(model_id: str, request: Request, principal: Principal) -> ModelCard:
    """One model by id, in OpenAI's shape; 404 ``model_not_found`` for any other id."""
    card = _model_card(request.app.state.settings)
    if model_id != card.id:
        raise ModelNotFoundError(f"The model {model_id!r} does not exist.", param="model")
    return card


def _summary(header: SessionHeader) -> SessionSummary:
    return SessionSummary(
        session_id=header.session_id,
        title=header.title,
        created_at=header.created_at,
        updated_at=header.updated_at,
        message_count=header.message_count,
    )


def _checked_session_id(session_id: str) -> str:
    if not _SESSION_ID.fullmatch(session_id):
        raise SessionNotFoundError(f"No session {session_id!r}.", param="session_id")
    return session_id


@router.get(
    "/v1/sessions",
    response_model=SessionList,
    tags=["sessions"],
    responses=_errors(400, 401, 429, 503),
)
async def list_sessions(
    request: Request,
    principal: Principal,
    limit: Annotated[int | None, Query(ge=1, le=100)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> SessionList:
    """The caller's sessions, most recently updated first, paged by ``cursor``."""
    store: SessionStore = request.app.state.session_store
    settings: Settings = request.app.state.settings
    page = await anyio.to_thread.run_sync(
        lambda: store.list_sessions(
            principal, limit=limit or settings.sessions_page_size, cursor=cursor
        )
    )
    return SessionList(
        data=[_summary(header) for header in page.sessions],
        has_more=page.next_cursor is not None,
        next_cursor=page.next_cursor,
    )


@router.get(
    "/v1/sessions/{session_id}",
    response_model=SessionDetail,
    tags=["sessions"],
    responses=_errors(401, 404, 429, 503),
)
async def get_session(session_id: str, request: Request, principal: Principal) -> SessionDetail:
    """One of the caller's sessions with all its messages, oldest first."""
    store: SessionStore = request.app.state.session_store
    checked = _checked_session_id(session_id)
    bind_log_context(session_id=checked)
    header, messages = await anyio.to_thread.run_sync(store.get_session, checked, principal)
    return SessionDetail(
        **_summary(header).model_dump(),
        messages=[
            SessionMessage(
                seq=m.seq,
                role=m.role,
                content=m.content,
                created_at=m.created_at,
                finish_reason=m.finish_reason,
                moderation=m.moderation,
                sources=[Source.model_validate(s) for s in m.sources] if m.sources else None,
                incomplete=m.incomplete,
            )
            for m in messages
        ],
    )


@router.delete(
    "/v1/sessions/{session_id}",
    response_model=SessionDeleted,
    tags=["sessions"],
    responses=_errors(401, 404, 429, 503),
)
async def delete_session(session_id: str, request: Request, principal: Principal) -> SessionDeleted:
    """Delete one of the caller's sessions and every message in it."""
    store: SessionStore = request.app.state.session_store
    checked = _checked_session_id(session_id)
    bind_log_context(session_id=checked)
    try:
        await anyio.to_thread.run_sync(store.delete_session, checked, principal)
    except DeleteIncompleteError as exc:
        metrics = RequestMetrics()
        metrics.add(
            Metric.SESSION_DELETE_INCOMPLETE, Metric.SESSION_DELETE_INCOMPLETE.unit, exc.left
        )
        metrics.add(Metric.ERRORS, Metric.ERRORS.unit, 1)
        metrics.flush()
        raise
    return SessionDeleted(session_id=checked)
