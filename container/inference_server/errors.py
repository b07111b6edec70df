"""Typed errors of the logic layer and their one mapping to the container's error envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "InferenceError",
    "InvalidRequestError",
    "NotReadyError",
    "PromptTooLongError",
    "error_body",
    "install_error_handlers",
]

logger = logging.getLogger(__name__)


class InferenceError(Exception):
    """Base of every error the logic layer raises; carries its HTTP status and envelope type."""

    status_code = 500
    error_type = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequestError(InferenceError):
    """The request is well-formed JSON but not acceptable (shape, types, ranges)."""

    status_code = 400
    error_type = "invalid_request"


class PromptTooLongError(InferenceError):
    """Prompt tokens plus ``max_new_tokens`` exceed the model's context window."""

    status_code = 413
    error_type = "context_length_exceeded"


class NotReadyError(InferenceError):
    """The backend or the role's resources (index, prompt) are not loaded yet."""

    status_code = 503
    error_type = "not_ready"


class BackendUnavailableError(InferenceError):
    """The model backend could not be reached."""

    status_code = 503
    error_type = "backend_unavailable"


class BackendError(InferenceError):
    """The model backend answered with an error or broke off a response."""

    status_code = 502
    error_type = "backend_error"


def error_body(error_type: str, message: str, **details: Any) -> dict[str, Any]:
    """Build the ``{"error": {...}}`` envelope.

    Parameters
    ----------
    error_type
        Machine-readable kind, e.g. ``invalid_request``.
    message
        Human-readable explanation.
    **details
        Extra fields (token counts, validation locations).

    Returns
    -------
    dict[str, Any]
        The envelope.
    """
    return {"error": {"type": error_type, "message": message, **details}}


def _validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(part) for part in err.get("loc", ())], "msg": str(err.get("msg", ""))}
        for err in exc.errors()
    ]


def install_error_handlers(app: FastAPI) -> None:
    """Map typed errors, validation errors and HTTP errors to the envelope.

    Parameters
    ----------
    app
        The application to install the handlers on.
    """

    async def on_inference_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InferenceError)
        body = error_body(exc.error_type, exc.message, **exc.details)
        return JSONResponse(body, status_code=exc.status_code)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = _validation_details(exc)
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return JSONResponse(
            error_body("invalid_request", message or "invalid request", errors=details),
            status_code=400,
        )

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(error_body(kind, str(exc.detail)), status_code=exc.status_code)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)

    app.add_exception_handler(InferenceError, on_inference_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
