"""Input that the (scripted) moderation endpoint flags ends the stream with content_filter."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from front_door.settings import Settings
from tests.e2e.conftest import HARMFUL_REQUEST, LocalStack


@pytest.mark.timeout(90, func_only=True)  # the stack fixture has its own deadline
def test_flagged_input_ends_with_content_filter_and_the_refusal(local_stack: LocalStack):
    client = openai.OpenAI(
        base_url=f"{local_stack.front_door_url}/v1", api_key="local", max_retries=0
    )

    stream = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": HARMFUL_REQUEST}],
        max_tokens=8,
        stream=True,
    )
    chunks = list(stream)

    choices = [choice for chunk in chunks for choice in chunk.choices]
    assert [c.finish_reason for c in choices if c.finish_reason] == ["content_filter"]
    content = "".join(c.delta.content or "" for c in choices)
    assert content == Settings.model_fields["refusal_text"].default
    extensions: list[dict[str, Any]] = [(c.model_extra or {})["chatbot"] for c in chunks]
    verdicts = [extension["moderation"] for extension in extensions if extension.get("moderation")]
    assert verdicts[-1] == {"input": "needs intervention", "output": None}
