"""HTTP layer: parse the SageMaker requests, call the role's logic, map results to responses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from chatbot_contracts.container import JSONLINES
from inference_server.app_state import services_of
from inference_server.errors import InvalidRequestError, NotReadyError
from inference_server.protocol import ChatRequest, ModerationRequest

__all__ = ["router"]

router = APIRouter()


@router.get("/ping")
async def ping(request: Request) -> Response:
    """SageMaker health check: 200 only when the backend answers and the role is loaded."""
    services = services_of(request.app)
    if services.backend_dead:
        return JSONResponse({"status": "backend exited"}, status_code=503)
    if services.load_error is not None:
        return JSONResponse({"status": "failed", "error": services.load_error}, status_code=503)
    if not services.role_ready:
        return JSONResponse({"status": "loading"}, status_code=503)
    if not await services.backend.healthy():
        return JSONResponse({"status": "backend not ready"}, status_code=503)
    return JSONResponse({"status": "healthy", "role": services.settings.role})


async def _json_body(request: Request) -> Any:
    body = await request.body()
    try:
        return json.loads(body)
    except ValueError as exc:
        raise InvalidRequestError(f"body is not valid JSON: {exc}") from exc


def _validation_error(exc: ValidationError) -> InvalidRequestError:
    errors = [
        {"loc": [str(part) for part in err["loc"]], "msg": err["msg"]} for err in exc.errors()
    ]
    message = "; ".join(f"{'.'.join(e['loc']) or 'body'}: {e['msg']}" for e in errors)
    return InvalidRequestError(message, errors=errors)


@router.post("/invocations")
async def invocations(request: Request) -> Response:
    """Chat or moderation, depending on the role in serving.properties."""
    services = services_of(request.app)
    payload = await _json_body(request)
    if services.settings.role == "moderation":
        try:
            moderation = ModerationRequest.model_validate(payload)
        except ValidationError as exc:
            raise _validation_error(exc) from exc
        if services.moderator is None:
            raise NotReadyError("moderation prompt not loaded yet")
        if len(moderation.texts()) > services.settings.moderation_max_inputs:
            raise InvalidRequestError(
                f"at most {services.settings.moderation_max_inputs} inputs per request"
            )
        result = await services.moderator.classify(moderation.texts())
        return JSONResponse(result.model_dump())

    try:
        chat_request = ChatRequest.model_validate(payload)
    except ValidationError as exc:
        raise _validation_error(exc) from exc
    if services.chat is None:
        raise NotReadyError("chat resources not loaded yet")
    prepared = await services.chat.prepare(chat_request)
    if not chat_request.stream:
        final = await services.chat.generate(prepared)
        return JSONResponse(final.model_dump(exclude_none=True))
    stream = await services.chat.open_stream(prepared)
    return StreamingResponse(stream.lines(), media_type=JSONLINES)
