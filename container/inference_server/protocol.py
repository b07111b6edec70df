"""The container protocol's models (from the contracts) and their mapping to backend parameters."""

from __future__ import annotations

from typing import Any

from chatbot_contracts.container import (
    ChatParameters,
    ChatRequest,
    Message,
    ModerationRequest,
    ModerationResponse,
)

__all__ = [
    "ChatParameters",
    "ChatRequest",
    "Message",
    "ModerationRequest",
    "ModerationResponse",
    "to_backend_params",
]


def to_backend_params(
    parameters: ChatParameters,
    *,
    max_tokens: int,
    extra_stop: list[str],
    vllm_extensions: bool = True,
) -> dict[str, Any]:
    """Map the request's parameters to OpenAI ``/v1/completions`` fields (plus vLLM's ``top_k``).

    Parameters
    ----------
    parameters
        The request's generation parameters.
    max_tokens
        The resolved ``max_new_tokens`` (after defaults and the cap).
    extra_stop
        Stop words configured for the model's prompt template.
    vllm_extensions
        Send vLLM's extra sampling fields (``top_k``, ``repetition_penalty``); plain
        OpenAI servers such as ``transformers serve`` reject unknown fields.

    Returns
    -------
    dict[str, Any]
        Request fields for the backend.
    """
    stop = list(dict.fromkeys([*parameters.stop, *extra_stop]))
    params: dict[str, Any] = {
        "max_tokens": max_tokens,
        "temperature": parameters.temperature,
        "top_p": parameters.top_p,
    }
    if vllm_extensions and parameters.top_k > 0:
        params["top_k"] = parameters.top_k
    if stop:
        params["stop"] = stop
    if parameters.seed is not None:
        params["seed"] = parameters.seed
    if vllm_extensions and parameters.repetition_penalty is not None:
        params["repetition_penalty"] = parameters.repetition_penalty
    return params
