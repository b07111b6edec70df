"""The openai SDK streams a chat from the local stack and continues it by session id."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import LocalStack

MAX_TOKENS = 12


def _client(stack: LocalStack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.front_door_url}/v1", api_key="local", max_retries=0)


def _stream(client: openai.OpenAI, content: str, **extra: object) -> tuple[list[str], str, str]:
    """Stream one turn; return the content deltas, the finish reason and the session id."""
    stream = client.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": content}],
        max_tokens=MAX_TOKENS,
        temperature=0.0,
        stream=True,
        # Without retrieval the prompt stays short, which keeps the small CPU model quick.
        extra_body={"retrieval": False, **extra},
    )
    deltas: list[str] = []
    finish_reason = ""
    session_id = ""
    for chunk in stream:
        session_id = ((chunk.model_extra or {}).get("chatbot") or {}).get(
            "session_id"
        ) or session_id
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish_reason = choice.finish_reason
    return deltas, finish_reason, session_id


@pytest.mark.timeout(120, func_only=True)  # the stack fixture has its own deadline
def test_sdk_streams_incremental_chunks_and_continues_the_session(local_stack: LocalStack):
    client = _client(local_stack)

    first_deltas, first_finish, session_id = _stream(client, "What does a data engineer do?")

    assert len(first_deltas) >= 2, f"expected the answer in several chunks, got {first_deltas}"
    assert "".join(first_deltas).strip()
    assert first_finish in {"stop", "length"}
    assert session_id

    second_deltas, second_finish, second_session = _stream(
        client, "And what tools do they use?", session_id=session_id
    )

    assert second_session == session_id
    assert len(second_deltas) >= 2
    assert second_finish in {"stop", "length"}
    stored = httpx.get(f"{local_stack.front_door_url}/v1/sessions/{session_id}", timeout=10)
    assert stored.status_code == 200
    messages = stored.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == "And what tools do they use?"
    assert messages[3]["content"] == "".join(second_deltas)
