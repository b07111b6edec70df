"""OpenAI clients unchanged against the front door: the SDK, LangChain, refused parameters."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from front_door.app import build_app
from front_door.protocol import REFUSED_PARAMETERS, ChatCompletionChunk

pytestmark = pytest.mark.timeout(120)

CHAT_MODEL = "chatbot-test-chat"


def caller(name: str) -> dict[str, str]:
    """Headers as the Lambda Web Adapter forwards an IAM-authenticated API Gateway request."""
    context = {
        "requestId": f"req-{name}-{time.monotonic_ns()}",
        "identity": {"userArn": f"arn:aws:iam::123456789012:user/{name}"},
    }
    return {"x-amzn-request-context": json.dumps(context)}


@pytest.fixture(scope="module")
def front_door(chain, module_session_table, serve) -> Iterator[str]:
    with serve(build_app(chain.settings(module_session_table))) as server:
        yield server.url


@pytest.fixture(scope="module")
def client(front_door: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front_door, timeout=60, headers=caller("compat")) as http:
        yield http


@pytest.fixture(scope="module")
def sdk(front_door: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{front_door}/v1", api_key="unused", default_headers=caller("sdk"), max_retries=0
    )


def sse(client: httpx.Client, body: dict[str, Any]) -> list[Any]:
    events: list[Any] = []
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
        assert reply.status_code == 200, reply.read()
        for line in reply.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


# --- models ----------------------------------------------------------------------------------


def test_models_list_and_retrieve_in_openai_shape(sdk):
    models = sdk.models.list()
    assert [m.id for m in models.data] == [CHAT_MODEL]
    assert models.data[0].object == "model"
    assert sdk.models.retrieve(CHAT_MODEL).owned_by == "chatbot"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-4o")
    assert caught.value.code == "model_not_found"


# --- refused and accepted parameters -----------------------------------------------------------

REFUSED_VALUES: dict[str, Any] = {
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": "auto",
    "functions": [{"name": "f", "parameters": {}}],
    "function_call": "auto",
    "logprobs": True,
    "top_logprobs": 2,
    "n": 2,
    "audio": {"voice": "alloy", "format": "wav"},
    "modalities": ["text", "audio"],
    "response_format": {"type": "json_object"},
    "prediction": {"type": "content", "content": "x"},
    "frequency_penalty": 0.5,
    "presence_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "reasoning_effort": "high",
    "verbosity": "low",
    "web_search_options": {},
}


def test_every_refused_parameter_has_a_refusing_value():
    assert set(REFUSED_VALUES) == set(REFUSED_PARAMETERS)


@pytest.mark.parametrize(("name", "value"), sorted(REFUSED_VALUES.items()))
def test_unsupported_parameter_is_a_400_naming_it(client, name, value):
    reply = client.post("/v1/chat/completions", json={"messages": user("hi"), name: value})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == name
    assert error["message"].startswith(f"{name}: {name} is not supported")
    assert error["type"] == "invalid_request_error"


def test_json_schema_response_format_is_refused_with_the_reason(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
        )
    assert caught.value.param == "response_format"
    assert "cannot constrain output to JSON" in caught.value.message


def test_harmless_values_and_passive_fields_are_accepted(client):
    reply = client.post(
        "/v1/chat/completions",
        json={
            "messages": user("question-40"),
            "tool_choice": "none",
            "n": 1,
            "logprobs": False,
            "response_format": {"type": "text"},
            "frequency_penalty": 0,
            "modalities": ["text"],
            "user": "end-user-7",
            "metadata": {"ticket": "42"},
            "store": False,
            "parallel_tool_calls": False,
            "service_tier": "auto",
        },
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == "answer-40"


def test_a_body_that_is_not_json_says_what_and_where(client):
    reply = client.post(
        "/v1/chat/completions",
        content=b'{"messages": [\n  {"role": "user", "content": "hi"},,\n]}',
        headers={"content-type": "application/json"},
    )
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["message"].startswith("The request body is not valid JSON: ")
    assert "line 2 column 37" in error["message"]
    assert error["param"] is None


# --- extensions and usage ----------------------------------------------------------------------


def test_extensions_live_under_chatbot_and_shadow_no_openai_field(client):
    events = sse(client, {"messages": user("question-41")})
    chunks = events[:-1]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert not {"session_id", "moderation", "sources"} & set(chunk)
    last = chunks[-1]["chatbot"]
    assert last["moderation"] == {"input": "casual", "output": "casual"}
    assert [s["id"] for s in last["sources"]] == ["doc-1", "doc-2"]
    assert {c["chatbot"]["session_id"] for c in chunks} == {last["session_id"]}
    assert all("usage" not in c for c in chunks)  # not asked for


def test_include_usage_adds_a_usage_chunk_before_done(client):
    events = sse(
        client, {"messages": user("question-42"), "stream_options": {"include_usage": True}}
    )
    assert events[-1] == "[DONE]"
    usage_chunk, body = events[-2], events[:-2]
    assert usage_chunk["choices"] == []
    usage = usage_chunk["usage"]
    assert usage["completion_tokens"] >= 1
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert all(c["usage"] is None for c in body)
    assert body[-1]["choices"][0]["finish_reason"] == "stop"


def test_session_id_header_matches_the_body(client):
    reply = client.post("/v1/chat/completions", json={"messages": user("question-43")})
    assert reply.headers["x-chatbot-session-id"] == reply.json()["chatbot"]["session_id"]


# --- clients, with every warning an error ------------------------------------------------------


@pytest.mark.filterwarnings("error")
def test_openai_sdk_streams_serializes_and_continues_without_warnings(sdk):
    stream = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "question-44"}],
        stream=True,
        stream_options={"include_usage": True},
        user="end-user-1",
    )
    chunks = list(stream)
    dumped = [chunk.model_dump() for chunk in chunks] + [chunk.to_dict() for chunk in chunks]
    assert dumped
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer-44"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    session_id = (chunks[0].model_extra or {})["chatbot"]["session_id"]
    reply = sdk.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "question-45"}],
        extra_body={"session_id": session_id},
    )
    reply.model_dump_json()
    assert reply.choices[0].message.content == "answer-45"
    assert (reply.model_extra or {})["chatbot"]["session_id"] == session_id
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "hi"}],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
        )
    assert caught.value.param == "tools"


@pytest.fixture(scope="module")
def chat_model(front_door: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=CHAT_MODEL,
        base_url=f"{front_door}/v1",
        api_key="unused",
        default_headers=caller("langchain"),
        max_retries=0,
    )


@pytest.mark.filterwarnings("error")
def test_langchain_chat_openai_invokes_streams_and_batches_without_warnings(chat_model):
    answer = chat_model.invoke("question-46")
    assert answer.content == "answer-46"
    streamed = [chunk.content for chunk in chat_model.stream("question-47")]
    assert "".join(str(c) for c in streamed) == "answer-47"
    assert len(streamed) >= 2
    batch = chat_model.batch(["question-48", "question-49"])
    assert [m.content for m in batch] == ["answer-48", "answer-49"]
