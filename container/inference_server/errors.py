"""Typed errors of the logic layer: each carries its HTTP status and envelope type."""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "InferenceError",
    "InvalidRequestError",
    "NotReadyError",
    "PromptTooLongError",
]


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
