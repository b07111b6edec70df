"""The front door's public error envelope: OpenAI's ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["OpenAIError", "OpenAIErrorEnvelope", "openai_error_envelope"]


class OpenAIError(BaseModel):
    """The fields of an OpenAI API error; clients (the openai SDK, the chat page) read these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIErrorEnvelope(BaseModel):
    """An error response body, and the payload of a failing stream's last SSE event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: OpenAIError


def openai_error_envelope(
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
    error = OpenAIError(message=message, type=error_type, param=param, code=code)
    return OpenAIErrorEnvelope(error=error).model_dump()
