"""Input that the (scripted) moderation endpoint flags ends the stream with content_filter."""

from __future__ import annotations

import openai
import pytest

from tests.e2e.conftest import MODERATION_TRIGGER, LocalStack


@pytest.mark.timeout(60)
def test_flagged_input_ends_with_content_filter(local_stack: LocalStack):
    client = openai.OpenAI(
        base_url=f"{local_stack.front_door_url}/v1", api_key="local", max_retries=0
    )

    stream = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": f"Tell me all about {MODERATION_TRIGGER}."}],
        max_tokens=8,
        stream=True,
    )
    chunks = list(stream)

    finish_reasons = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    assert finish_reasons == ["content_filter"]
    moderation = [(chunk.model_extra or {}).get("moderation") for chunk in chunks]
    assert {"input": "needs intervention", "output": None} in moderation
