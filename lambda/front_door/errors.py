"""Typed front-door errors and their single mapping onto the OpenAI error envelope."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class FrontDoorError(Exception):
    """Base of every error the front door reports to a client.

    Parameters
    ----------
    message
        Human-readable text for the client; never contains upstream internals.
    param
        The request field at fault, where there is one.
    """

    status_code: int = 500
    error_type: str = "server_error"
    code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        """Extra response headers (e.g. ``Retry-After``)."""
        return {}

    def envelope(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return error_envelope(self.message, self.error_type, self.code, self.param)


class InvalidRequestError(FrontDoorError):
    """The request is malformed or asks for something unsupported (400)."""

    status_code = 400
    error_type = "invalid_request_error"
    code = "invalid_request"


class RequestTooLargeError(FrontDoorError):
    """The request's messages exceed the configured size limits (413)."""

    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


class MissingPrincipalError(FrontDoorError):
    """No authenticated caller could be resolved from the request context (401)."""

    status_code = 401
    error_type = "authentication_error"
    code = "missing_principal"


class SessionNotFoundError(FrontDoorError):
    """The session does not exist or belongs to another principal (404, indistinguishable)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "session_not_found"


class ModelNotFoundError(FrontDoorError):
    """``GET /v1/models/{id}`` names a model this front door does not serve (404)."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class SessionConflictError(FrontDoorError):
    """A turn could not be appended: the session changed or vanished under the write (409)."""

    status_code = 409
    error_type = "conflict_error"
    code = "session_conflict"


class UpstreamThrottledError(FrontDoorError):
    """A SageMaker endpoint or DynamoDB throttled us after the client's retries (429)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "upstream_throttled"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Tell the client when to come back."""
        return {"Retry-After": str(self.retry_after_s)}


class UpstreamModelError(FrontDoorError):
    """The model container answered with an error before streaming (502)."""

    status_code = 502
    error_type = "upstream_error"
    code = "model_error"


class UpstreamUnavailableError(FrontDoorError):
    """An endpoint or the session store cannot be reached or is not ready (503)."""

    status_code = 503
    error_type = "service_unavailable"
    code = "upstream_unavailable"


class ModerationUnavailableError(UpstreamUnavailableError):
    """The moderation endpoint failed; requests are refused rather than let through (503)."""

    code = "moderation_unavailable"


class DeleteIncompleteError(UpstreamUnavailableError):
    """A session's header was deleted but some messages were not (503; they expire by TTL)."""

    code = "delete_incomplete"

    def __init__(self, message: str, *, left: int) -> None:
        super().__init__(message, param="session_id")
        self.left = left


class UpstreamTimeoutError(FrontDoorError):
    """An endpoint did not answer within the configured timeout (504)."""

    status_code = 504
    error_type = "timeout_error"
    code = "upstream_timeout"


class StreamInterruptedError(FrontDoorError):
    """The model stream broke after tokens were relayed (reported as a final SSE event)."""

    status_code = 502
    error_type = "upstream_error"
    code = "stream_interrupted"


def error_envelope(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """Build ``{"error": {"message", "type", "param", "code"}}`` as the OpenAI API does.

    Parameters
    ----------
    message, error_type, code, param
        The envelope's fields.

    Returns
    -------
    dict
        The JSON-ready envelope.
    """
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


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
        body = error_envelope(message, "invalid_request_error", "invalid_request", param)
        return JSONResponse(body, status_code=400)

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_type, code = _STATUS_TYPES.get(exc.status_code, ("server_error", "internal_error"))
        body = error_envelope(str(exc.detail), error_type, code)
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected_error(_: Request, exc: Exception) -> JSONResponse:
        body = error_envelope("Internal error.", "server_error", "internal_error")
        return JSONResponse(body, status_code=500)

    app.add_exception_handler(FrontDoorError, on_front_door_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
