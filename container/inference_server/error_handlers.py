"""The one mapping of typed errors, validation and HTTP errors onto the container's envelope."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbot_contracts.container import error_envelope
from inference_server.errors import InferenceError

__all__ = ["install_error_handlers"]

logger = logging.getLogger(__name__)


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
        body = error_envelope(exc.error_type, exc.message, **exc.details)
        return JSONResponse(body, status_code=exc.status_code)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = _validation_details(exc)
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details)
        return JSONResponse(
            error_envelope("invalid_request", message or "invalid request", errors=details),
            status_code=400,
        )

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        kind = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(error_envelope(kind, str(exc.detail)), status_code=exc.status_code)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_envelope("internal_error", "internal server error"), status_code=500
        )

    app.add_exception_handler(InferenceError, on_inference_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
