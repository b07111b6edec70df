"""Moderation that can only answer a label: the choice list on the wire, settings, fallbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from chatbot_contracts.moderation import MODERATION_LABELS, ModerationLabel
from inference_server.backend_client import BackendClient
from inference_server.errors import BackendError
from inference_server.moderation import FALLBACK_LABEL, Moderator
from inference_server.settings import ServingSettings
from tests.container.helpers import ScriptedBackend

PROMPT = "Label the text.\nInput: {input}\nOutput:"


def _last_body(backend: ScriptedBackend) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{backend.url}/_stats").json()["last_requests"][-1]["body"]
    return body


async def _classify(url: str, texts: list[str], *, choice: bool) -> list[ModerationLabel]:
    client = BackendClient(url, "scripted")
    try:
        return (await Moderator(client, PROMPT, choice=choice).classify(texts)).labels
    finally:
        await client.aclose()


def test_choice_mode_sends_the_five_labels_and_reads_the_exact_answer(
    scripted_backend: ScriptedBackend,
) -> None:
    scripted_backend.script(
        {
            "rules": [
                {"contains": "Input: ALPHA\n", "response": " needs caution"},
                {"contains": "Input: BRAVO\n", "response": "not casual; needs intervention"},
            ],
            "default": {"response": "casual"},
        }
    )
    labels = asyncio.run(_classify(scripted_backend.url, ["ALPHA", "other"], choice=True))
    assert labels == ["needs caution", "casual"]
    body = _last_body(scripted_backend)
    assert body["structured_outputs"] == {"choice": list(MODERATION_LABELS)}
    assert "stop" not in body
    assert body["temperature"] == 0.0
    # An answer outside the list cannot come from a constrained engine: the scripted backend
    # refuses it, and the caller sees a backend error (the front door then refuses the turn).
    with pytest.raises(BackendError, match="not one of the requested choices"):
        asyncio.run(_classify(scripted_backend.url, ["BRAVO"], choice=True))


def test_free_text_mode_parses_and_never_reads_a_negation_as_casual(
    scripted_backend: ScriptedBackend,
) -> None:
    scripted_backend.script(
        {
            "rules": [{"contains": "Input: BRAVO\n", "response": "not casual; needs intervention"}],
            "default": {"response": " gibberish"},
        }
    )
    labels = asyncio.run(_classify(scripted_backend.url, ["BRAVO", "other"], choice=False))
    assert labels == ["needs intervention", FALLBACK_LABEL]
    body = _last_body(scripted_backend)
    assert "structured_outputs" not in body
    assert body["stop"] == ["\n"]


@pytest.mark.parametrize(
    ("backend", "decoding", "choice"),
    [
        ("vllm", "auto", True),
        ("external", "auto", False),
        ("external", "choice", True),
        ("vllm", "free_text", False),
    ],
)
def test_choice_decoding_follows_the_backend_unless_set(
    backend: str, decoding: str, choice: bool
) -> None:
    settings = ServingSettings.model_validate(
        {
            "role": "moderation",
            "model_id": "m",
            "backend": backend,
            "moderation_decoding": decoding,
        }
    )
    assert settings.moderation_uses_choice() is choice
