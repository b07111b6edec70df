"""The one mapping of every error raised while serving onto the OpenAI error envelope."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot_contracts.front_door import openai_error_envelope
from front_door.errors import FrontDoorError

__all__ = ["install_error_handlers"]

_STATUS_TYPES: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "missing_principal"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
}


def _json_error_message(first: dict[str, Any], document: Any) -> str:
    """Say what is wrong with a body that is not JSON, and where (line, column, offset)."""
    reason = str((first.get("ctx") or {}).get("error", "invalid JSON"))
    location = [part for part in first.get("loc", ()) if part != "body"]
    offset = location[0] if location and isinstance(location[0], int) else None
    if offset is None or not isinstance(document, str | bytes):
        return f"The request body is not valid JSON: {reason}."
    text = document.decode(errors="replace") if isinstance(document, bytes) else document
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return (
        f"The request body is not valid JSON: {reason} at line {line} column {column} "
        f"(character {offset})."
    )


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return _json_error_message(first, exc.body), None
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    text = str(first.get("msg", "invalid value"))
    return (f"{param}: {text}" if param else text), param


def install_error_handlers(app: FastAPI) -> None:
    """Map every error raised while serving onto the OpenAI envelope, in this one place.

    Parameters
    ----------
    app
        The application to install the handlers on.
    """

    async def on_front_door_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, FrontDoorError)
        return JSONResponse(exc.envelope(), status_code=exc.status_code, headers=exc.headers())

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        message, param = _validation_message(exc)
        body = openai_error_envelope(message, "invalid_request_error", "invalid_request", param)
        return JSONResponse(body, status_code=400)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_type, code = _STATUS_TYPES.get(exc.status_code, ("server_error", "internal_error"))
        body = openai_error_envelope(str(exc.detail), error_type, code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        body = openai_error_envelope("Internal error.", "server_error", "internal_error")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(FrontDoorError, on_front_door_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
