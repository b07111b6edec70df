"""Typed front-door errors: each carries its HTTP status, OpenAI error type and code."""

from __future__ import annotations

from typing import Any

from chatbot_contracts.front_door import openai_error_envelope


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
        return openai_error_envelope(self.message, self.error_type, self.code, self.param)


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


class ModelWakingUpError(UpstreamUnavailableError):
    """A model scaled to zero has no copy yet; it is starting, come back later (503).

    Raised for the chat and the moderation model alike: without moderation nothing is
    generated, so a sleeping moderation model refuses the request the same way.
    """

    code = "model_waking_up"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        """Tell the client when the model should be up."""
        return {"Retry-After": str(self.retry_after_s)}


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
