"""The front door over HTTP: emulator -> container servers -> scripted backends; moto sessions."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import openai
import pytest

from front_door.app import build_app
from local.fixed_principal import FixedPrincipal, local_identity_arn

pytestmark = pytest.mark.timeout(120)

REFUSAL = "I can't help with that request."
FORBIDDEN = "zq-forbidden"
DEFAULT_ANSWER = "Hello there, friend."
WINDOW_TWO_TOKENS = [f" t{i}" if i != 20 else " zq-late-flag" for i in range(64)]
LONG_ANSWER = " ".join(f"word{i}." if i % 10 == 9 else f"word{i}" for i in range(120))


def caller(name: str = "alice") -> dict[str, str]:
    """Headers as the Lambda Web Adapter forwards an IAM-authenticated API Gateway request."""
    context = {
        "requestId": f"req-{name}-{time.monotonic_ns()}",
        "identity": {"userArn": f"arn:aws:iam::123456789012:user/{name}"},
    }
    return {"x-amzn-request-context": json.dumps(context)}


@pytest.fixture(scope="module")
def table(module_session_table: str) -> str:
    return module_session_table


@pytest.fixture(scope="module")
def front_door(chain, table, serve) -> Iterator[str]:
    with serve(build_app(chain.settings(table))) as server:
        yield server.url


@pytest.fixture(scope="module")
def client(front_door: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front_door, timeout=60) as http:
        yield http


@pytest.fixture(autouse=True)
def no_faults(chain) -> Iterator[None]:
    chain.clear_faults()
    yield
    chain.clear_faults()


def ask(client: httpx.Client, content: str, who: str = "alice", **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=caller(who))


def stream(client: httpx.Client, body: dict[str, Any], who: str = "alice") -> list[Any]:
    events: list[Any] = []
    with client.stream(
        "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=caller(who)
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def session(client: httpx.Client, session_id: str, who: str = "alice") -> dict[str, Any]:
    response = client.get(f"/v1/sessions/{session_id}", headers=caller(who))
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def items_of(scan_table, table: str, session_id: str) -> list[dict[str, Any]]:
    return [i for i in scan_table(table) if i["pk"]["S"] == f"SESSION#{session_id}"]


# --- streaming and sessions ------------------------------------------------------------------


def test_streaming_relays_chunks_with_session_moderation_and_sources(client):
    events = stream(client, {"messages": [{"role": "user", "content": "hi"}]})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    session_ids = {c["chatbot"]["session_id"] for c in chunks}
    assert len(session_ids) == 1
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == DEFAULT_ANSWER
    assert len(chunks) >= 3  # token by token, not one blob
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["chatbot"]["moderation"] == {"input": "casual", "output": "casual"}
    assert [s["id"] for s in last["chatbot"]["sources"]] == ["doc-1", "doc-2"]
    stored = session(client, session_ids.pop())
    assert [(m["role"], m["content"]) for m in stored["messages"]] == [
        ("user", "hi"),
        ("assistant", DEFAULT_ANSWER),
    ]
    assert stored["messages"][1]["incomplete"] is False
    assert stored["messages"][1]["sources"][0]["title"] == "Data engineering"


def test_multibyte_text_split_across_payload_parts_arrives_intact(client):
    events = stream(client, {"messages": [{"role": "user", "content": "unicode please"}]})
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in events[:-1])
    assert text == "naïve café — 数据工程师 🚀 done"


def test_non_streaming_response_and_continuation_sends_history(client, chain):
    first = ask(client, "question-01")
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "answer-01"
    session_id = body["chatbot"]["session_id"]
    second = ask(client, "question-02", session_id=session_id, retrieval=False)
    assert second.status_code == 200, second.text
    assert second.json()["chatbot"]["session_id"] == session_id
    assert second.json()["choices"][0]["message"]["content"] == "answer-02"
    assert second.json()["chatbot"]["sources"] == []
    prompt = chain.chat_prompts()[-1]
    assert prompt.index("question-01") < prompt.index("answer-01") < prompt.index("question-02")
    stored = session(client, session_id)
    assert [m["content"] for m in stored["messages"]] == [
        "question-01",
        "answer-01",
        "question-02",
        "answer-02",
    ]
    assert stored["message_count"] == 4


def test_openai_sdk_streams_and_continues_a_session(front_door):
    sdk = openai.OpenAI(
        base_url=f"{front_door}/v1", api_key="unused", default_headers=caller("sdk-user")
    )
    chunks = list(
        sdk.chat.completions.create(
            model="chatbot",
            messages=[{"role": "user", "content": "question-03"}],
            stream=True,
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "answer-03"
    # Our extension survives the SDK's models under a key the SDK does not type.
    last: dict[str, Any] = chunks[-1].to_dict(mode="json")
    session_id = last["chatbot"]["session_id"]
    assert last["chatbot"]["moderation"]["input"] == "casual"
    assert [s["id"] for s in last["chatbot"]["sources"]] == ["doc-1", "doc-2"]
    reply = sdk.chat.completions.create(
        model="chatbot",
        messages=[{"role": "user", "content": "question-04"}],
        extra_body={"session_id": session_id},
    )
    assert reply.choices[0].message.content == "answer-04"
    assert (reply.model_extra or {})["chatbot"]["session_id"] == session_id
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(
            model="chatbot",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"session_id": "0" * 32},
        )


def test_another_principal_gets_404_everywhere(client):
    session_id = ask(client, "question-05", who="owner").json()["chatbot"]["session_id"]
    for response in (
        client.get(f"/v1/sessions/{session_id}", headers=caller("intruder")),
        client.delete(f"/v1/sessions/{session_id}", headers=caller("intruder")),
        ask(client, "question-06", who="intruder", session_id=session_id),
    ):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "session_not_found"
    listed = client.get("/v1/sessions", headers=caller("intruder")).json()
    assert session_id not in [s["session_id"] for s in listed["data"]]
    assert len(session(client, session_id, who="owner")["messages"]) == 2


def test_list_is_newest_first_paged_and_delete_removes_everything(client, scan_table, table):
    ids = [
        ask(client, f"question-{i:02d}", who="lister").json()["chatbot"]["session_id"]
        for i in range(3)
    ]
    page = client.get("/v1/sessions", params={"limit": 2}, headers=caller("lister")).json()
    assert [s["session_id"] for s in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    rest = client.get(
        "/v1/sessions", params={"limit": 2, "cursor": page["next_cursor"]}, headers=caller("lister")
    ).json()
    assert [s["session_id"] for s in rest["data"]] == [ids[0]]
    deleted = client.delete(f"/v1/sessions/{ids[1]}", headers=caller("lister"))
    assert deleted.status_code == 200
    assert deleted.json() == {"session_id": ids[1], "deleted": True}
    assert items_of(scan_table, table, ids[1]) == []
    assert client.get(f"/v1/sessions/{ids[1]}", headers=caller("lister")).status_code == 404


def test_healthz_needs_no_principal(client):
    assert client.get("/healthz").json() == {"status": "ok"}


# --- bad input -------------------------------------------------------------------------------

BAD_REQUESTS: list[tuple[str, Any, int]] = [
    ("not json", b"{not json", 400),
    ("no messages", {"model": "x"}, 400),
    ("empty messages", {"messages": []}, 400),
    ("last turn not user", {"messages": [{"role": "assistant", "content": "hi"}]}, 400),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400),
    ("content not text", {"messages": [{"role": "user", "content": 5}]}, 400),
    ("temperature", {"messages": [{"role": "user", "content": "q"}], "temperature": 3}, 400),
    ("top_p", {"messages": [{"role": "user", "content": "q"}], "top_p": 0}, 400),
    ("max_tokens zero", {"messages": [{"role": "user", "content": "q"}], "max_tokens": 0}, 400),
    ("max_tokens big", {"messages": [{"role": "user", "content": "q"}], "max_tokens": 10**6}, 400),
    ("n", {"messages": [{"role": "user", "content": "q"}], "n": 2}, 400),
    ("stop", {"messages": [{"role": "user", "content": "q"}], "stop": ["a"] * 5}, 400),
    ("session id", {"messages": [{"role": "user", "content": "q"}], "session_id": "../x"}, 400),
    (
        "unknown session",
        {"messages": [{"role": "user", "content": "q"}], "session_id": "f" * 32},
        404,
    ),
    ("too long", {"messages": [{"role": "user", "content": "x" * 40_000}]}, 413),
    ("too many", {"messages": [{"role": "user", "content": "q"}] * 65}, 413),
]


@pytest.mark.parametrize(("case", "body", "status"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_the_openai_envelope_and_writes_nothing(
    client, scan_table, table, case, body, status
):
    before = len(scan_table(table))
    kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
    response = client.post(
        "/v1/chat/completions",
        headers={**caller("bad-input"), "content-type": "application/json"},
        **kwargs,
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["type"] == "invalid_request_error"
    assert len(scan_table(table)) == before


def test_missing_principal_is_401(client):
    response = client.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert client.get("/v1/sessions").status_code == 401


def test_unknown_route_and_method_use_the_envelope(client):
    assert client.get("/v1/nope").json()["error"]["code"] == "not_found"
    assert client.put("/v1/chat/completions").status_code == 405


# --- moderation ------------------------------------------------------------------------------


def wait_until(condition: Any, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def test_blocked_input_is_refused_closes_the_chat_stream_and_is_not_stored(client, chain):
    hits_before = chain.chat_stats()["rule_hits"].get("refused-input", 0)
    response = ask(client, f"please {FORBIDDEN} now")
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert body["choices"][0]["message"]["content"] == REFUSAL
    assert body["chatbot"]["moderation"]["input"] == "needs intervention"
    stored = session(client, body["chatbot"]["session_id"])
    assert FORBIDDEN not in json.dumps(stored)
    assert stored["messages"][0]["content"] == "[removed by moderation]"
    assert stored["messages"][1]["content"] == REFUSAL
    # Generation started beside moderation, and the block closed its stream: the scripted
    # answer streams for 6 s (120 tokens, 50 ms apart), the upstream stream ends long before.
    wait_until(
        lambda: chain.chat_stats()["rule_hits"].get("refused-input", 0) == hits_before + 1,
        "the chat backend received the flagged turn",
    )
    wait_until(
        lambda: chain.chat_stats()["active_streams"] == 0,
        "the chat stream of the blocked turn is closed",
        timeout_s=4.0,
    )


def test_no_token_reaches_the_client_before_the_input_verdict(client, chain):
    # The answer is generated in full while moderation takes LATE_VERDICT_S to block the
    # input: none of it may be relayed, and the turn ends exactly as a blocked input does.
    hits_before = chain.chat_stats()["rule_hits"].get("late-verdict", 0)
    events = stream(client, {"messages": [{"role": "user", "content": "late verdict please"}]})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == REFUSAL
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-1]["chatbot"]["moderation"]["input"] == "needs intervention"
    assert chain.chat_stats()["rule_hits"].get("late-verdict", 0) == hits_before + 1
    stored = session(client, chunks[0]["chatbot"]["session_id"])["messages"]
    assert [m["content"] for m in stored] == ["[removed by moderation]", REFUSAL]


class ChatStreamFirst:
    """Moderation endpoint that answers only once the chat backend has received the turn.

    If the front door called moderation before opening the chat stream, this would wait
    for a request that never comes and fail the test.
    """

    def __init__(self, inner: Any, chain: Any, marker: str) -> None:
        self.inner, self.chain, self.marker = inner, chain, marker

    async def invoke_json(self, endpoint_name: str, body: Any) -> dict[str, object]:
        import asyncio

        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=self.chain.chat_backend.url) as http:
            while not any(
                self.marker in str(r["body"].get("prompt", ""))
                for r in (await http.get("/_stats")).json()["last_requests"]
            ):
                if time.monotonic() > deadline:
                    raise AssertionError("input moderation ran before the chat stream opened")
                await asyncio.sleep(0.02)
        result: dict[str, object] = await self.inner.invoke_json(endpoint_name, body)
        return result


def test_chat_stream_opens_while_the_input_is_judged(chain, table):
    import asyncio

    from front_door.chat import ChatService, Delta, Finish
    from front_door.endpoint_client import EndpointClient, create_sagemaker_runtime_client
    from front_door.moderation import Moderator
    from front_door.observability import RequestMetrics
    from front_door.protocol import ChatCompletionRequest
    from front_door.sessions import SessionStore

    settings = chain.settings(table)
    marker = f"parallel-{time.monotonic_ns()}"

    async def turn() -> list[Any]:
        endpoints = EndpointClient(create_sagemaker_runtime_client(settings))
        moderator = Moderator(
            ChatStreamFirst(endpoints, chain, marker),
            settings.moderation_endpoint,
            settings.blocked_labels,
        )
        service = ChatService(settings, endpoints, moderator, SessionStore.from_settings(settings))
        request = ChatCompletionRequest.model_validate(
            {"messages": [{"role": "user", "content": marker}]}
        )
        principal = "arn:aws:iam::123456789012:user/parallel"
        started = await service.start_turn(request, principal, RequestMetrics())
        return [event async for event in service.events(started)]

    events = asyncio.run(turn())
    assert "".join(e.text for e in events if isinstance(e, Delta)) == DEFAULT_ANSWER
    assert isinstance(events[-1], Finish)
    assert events[-1].moderation["input"] == "casual"


def test_blocked_output_stops_the_stream_and_stores_the_refusal(client):
    events = stream(client, {"messages": [{"role": "user", "content": "tell me the secret"}]})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.endswith(REFUSAL)
    assert "word119" not in text  # the relay stopped soon after the flagged window
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-1]["chatbot"]["moderation"]["output"] == "needs intervention"
    stored = session(client, chunks[0]["chatbot"]["session_id"])
    reply = stored["messages"][1]
    assert reply["content"] == REFUSAL
    assert reply["moderation"] == "needs intervention"
    assert reply["finish_reason"] == "content_filter"
    assert FORBIDDEN not in json.dumps(stored)


@pytest.mark.parametrize(("mode", "relayed_tokens"), [("sync", 16), ("async", 47)])
def test_output_moderation_mode_bounds_what_a_flagged_window_leaks(
    chain, table, serve, mode, relayed_tokens
):
    # Windows every 16 tokens; token 21 is flagged, so the second window (tokens 17-32) is.
    # sync: only the first, clean window reaches the client. async: the flagged window and at
    # most every_tokens - 1 = 15 tokens after it (the relay waits for the verdict when the
    # third window comes due at token 48).
    settings = chain.settings(table, output_moderation_mode=mode)
    with (
        serve(build_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        events = stream(
            http, {"messages": [{"role": "user", "content": "flag in window two please"}]}
        )
        chunks = events[:-1]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
        assert text == "".join(WINDOW_TWO_TOKENS[:relayed_tokens]) + REFUSAL
        assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
        stored = session(http, chunks[0]["chatbot"]["session_id"])["messages"]
        assert stored[1]["content"] == REFUSAL


def test_sync_output_moderation_relays_a_clean_answer_whole(chain, table, serve):
    settings = chain.settings(table, output_moderation_mode="sync")
    with (
        serve(build_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as http,
    ):
        for content, answer in (("long please", LONG_ANSWER), ("question-03", "answer-03")):
            events = stream(http, {"messages": [{"role": "user", "content": content}]})
            chunks = events[:-1]
            text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
            assert text == answer
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
            assert chunks[-1]["chatbot"]["moderation"]["output"] == "casual"


@pytest.mark.parametrize(("tokens", "calls"), [(3, 2), (16, 2), (17, 3)])
def test_output_is_checked_by_window_and_whole_answer_exactly_as_needed(
    client, chain, tokens, calls
):
    # Windows every 16 tokens here. 3 tokens: input + final check. 16: input + one window that
    # saw the whole answer (the final check would repeat it). 17: input + window + final.
    content = "hi" if tokens == 3 else f"exactly {tokens} please"
    before = chain.moderation_calls()
    response = ask(client, content, stream=True)
    assert response.status_code == 200
    assert chain.moderation_calls() - before == calls


def test_moderation_unavailable_fails_closed_with_503(client, chain, scan_table, table):
    before = len(scan_table(table))
    chain.set_faults(moderation={"model_error": 5})
    response = ask(client, "question-07")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "moderation_unavailable"
    assert len(scan_table(table)) == before


# --- upstream faults -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "status", "code"),
    [
        ({"throttle": 10}, 429, "upstream_throttled"),
        ({"model_error": 2}, 502, "model_error"),
        ({"service_unavailable": 10}, 503, "upstream_unavailable"),
    ],
)
def test_faults_before_the_stream_map_to_statuses_and_keep_the_session(
    chain, table, serve, faults, status, code
):
    # Its own app, one attempt: adaptive retries slow a throttled client down on purpose.
    settings = chain.settings(table, endpoint_max_attempts=1)
    with (
        serve(build_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        session_id = ask(client, "question-08").json()["chatbot"]["session_id"]
        chain.set_faults(chat=faults)
        for use_stream in (False, True):
            response = ask(client, "question-09", session_id=session_id, stream=use_stream)
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
            if status == 429:
                assert int(response.headers["retry-after"]) >= 1
        chain.clear_faults()
        messages = session(client, session_id)["messages"]
    assert [m["content"] for m in messages] == [
        "question-08",
        "answer-08",
    ]


@pytest.mark.parametrize("fault", ["stream_error", "stream_failure"])
def test_mid_stream_failure_ends_with_error_event_and_incomplete_turn(client, chain, fault):
    chain.set_faults(chat={fault: 1, f"{fault}_after_parts": 12})
    events = stream(client, {"messages": [{"role": "user", "content": "long please"}]})
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert error["error"]["code"] == "stream_interrupted"
    session_id = error["chatbot"]["session_id"]
    relayed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    stored = session(client, session_id)["messages"]
    assert stored[1]["incomplete"] is True
    assert stored[1]["content"] == relayed
    assert stored[1]["finish_reason"] == "error"
    # The session stays usable.
    assert ask(client, "question-10", session_id=session_id).status_code == 200


def test_mid_stream_failure_without_streaming_is_502_and_stored_incomplete(client, chain):
    session_id = ask(client, "question-11").json()["chatbot"]["session_id"]
    chain.set_faults(chat={"stream_error": 1, "stream_error_after_parts": 5})
    response = ask(client, "long please", session_id=session_id)
    assert response.status_code == 502
    messages = session(client, session_id)["messages"]
    assert len(messages) == 4
    assert messages[3]["incomplete"] is True


def test_throttling_before_the_first_byte_is_retried_transparently(chain, table, serve):
    settings = chain.settings(table, endpoint_max_attempts=3)
    with (
        serve(build_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
    ):
        chain.set_faults(chat={"throttle": 1})
        response = ask(client, "question-15", who="retried")
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "answer-15"
        assert (
            httpx.get(f"{chain.emulator.url}/_faults").json()["chatbot-test-chat"]["throttle"] == 0
        )


def test_slow_first_byte_past_the_read_timeout_is_504(chain, module_session_table, serve):
    settings = chain.settings(
        module_session_table, endpoint_read_timeout_s=0.3, endpoint_max_attempts=1
    )
    with serve(build_app(settings)) as server, httpx.Client(base_url=server.url) as http:
        chain.set_faults(chat={"first_byte_delay_s": 2.0})
        response = ask(http, "question-12", who="timeout")
        assert response.status_code == 504
        assert response.json()["error"]["type"] == "timeout_error"


def test_client_disconnect_mid_stream_still_stores_the_partial_turn(client, front_door):
    session_id = ask(client, "question-13").json()["chatbot"]["session_id"]
    received = ""
    with (
        httpx.Client(base_url=front_door, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "slow please"}],
                "session_id": session_id,
                "stream": True,
            },
            headers=caller(),
        ) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: {"):
                received += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            if received.count("word") >= 3:
                break  # closing the response drops the connection mid-stream
    deadline = time.monotonic() + 20
    while True:
        messages = session(client, session_id)["messages"]
        if len(messages) == 4 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == "slow please"
    assert messages[3]["incomplete"] is True
    assert messages[3]["content"].startswith(received)
    assert "word119" not in messages[3]["content"]


def test_session_deleted_mid_stream_ends_with_409_event_and_stays_deleted(
    client, front_door, scan_table, table
):
    session_id = ask(client, "question-16").json()["chatbot"]["session_id"]
    events: list[Any] = []
    with (
        httpx.Client(base_url=front_door, timeout=30) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json={
                "messages": [{"role": "user", "content": "medium please"}],
                "session_id": session_id,
                "stream": True,
            },
            headers=caller(),
        ) as response,
    ):
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            events.append(data if data == "[DONE]" else json.loads(data))
            if len(events) == 3:
                deleted = client.delete(f"/v1/sessions/{session_id}", headers=caller())
                assert deleted.status_code == 200
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "session_conflict"
    assert items_of(scan_table, table, session_id) == []


def test_the_local_fixed_principal_wraps_the_unchanged_app(chain, table, serve, scan_table):
    app = FixedPrincipal(build_app(chain.settings(table)), name="developer")
    with serve(app) as server, httpx.Client(base_url=server.url) as http:
        session_id = http.post(
            "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        ).json()["chatbot"]["session_id"]
        # No request context needed, and whatever one a client sends is replaced.
        listed = http.get("/v1/sessions", headers=caller("someone-else")).json()
    assert session_id in [s["session_id"] for s in listed["data"]]
    items = items_of(scan_table, table, session_id)
    owners = {i["owner"]["S"] for i in items if "owner" in i}
    assert owners == {f"iam:{local_identity_arn('developer')}"}


# --- concurrency -----------------------------------------------------------------------------


def test_twenty_concurrent_requests_on_one_session_lose_and_duplicate_nothing(client):
    session_id = ask(client, "question-20", who="busy").json()["chatbot"]["session_id"]

    def turn(i: int) -> int:
        return ask(
            client, f"question-{i:02d}", who="busy", session_id=session_id, stream=i % 2 == 0
        ).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(turn, range(21, 41)))
    assert statuses == [200] * 20
    messages = session(client, session_id, who="busy")["messages"]
    contents = [m["content"] for m in messages]
    assert len(contents) == 42
    questions = contents[0::2]
    assert sorted(questions) == [f"question-{i:02d}" for i in range(20, 41)]
    assert all(
        a == q.replace("question", "answer") for q, a in zip(questions, contents[1::2], strict=True)
    )
    assert [m["seq"] for m in messages] == list(range(42))


def test_fifty_sessions_in_parallel(client):
    def conversation(i: int) -> tuple[str, int]:
        first = ask(client, f"question-{i % 64:02d}", who=f"user-{i}", stream=i % 2 == 1)
        assert first.status_code == 200
        if i % 2 == 1:
            first_chunk = json.loads(first.text.split("\n", 1)[0].removeprefix("data: "))
            session_id = first_chunk["chatbot"]["session_id"]
        else:
            session_id = first.json()["chatbot"]["session_id"]
        return session_id, len(session(client, session_id, who=f"user-{i}")["messages"])

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(conversation, range(50)))
    assert len({session_id for session_id, _ in results}) == 50
    assert all(count == 2 for _, count in results)


# --- observability ---------------------------------------------------------------------------


def test_logs_carry_request_and_session_ids_and_metrics_are_emitted(client, chain, capsys):
    import logging

    from front_door.observability import get_logger

    logger = get_logger()
    lines: list[str] = []
    lock = threading.Lock()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            with lock:
                lines.append(logger.registered_formatter.format(record))

    handler = Collect()
    logger.addHandler(handler)
    try:
        chain.set_faults(chat={"stream_error": 1, "stream_error_after_parts": 3})
        headers = caller("observed")
        request_id = json.loads(headers["x-amzn-request-context"])["requestId"]
        response = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "long please"}]},
            headers=headers,
        )
        assert response.status_code == 502
    finally:
        logging.getLogger(logger.name).removeHandler(handler)
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r.get("message") == "turn failed"]
    assert failed
    assert failed[0]["request_id"] == request_id
    assert len(failed[0]["session_id"]) == 32
    assert failed[0]["service"] == "chatbot-front-door"
    ask(client, "question-14", who="observed")
    emitted = capsys.readouterr().out
    documents = [json.loads(line) for line in emitted.splitlines() if '"_aws"' in line]
    names = {
        metric["Name"]
        for doc in documents
        for directive in doc["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert {"TimeToFirstToken", "TokensOut", "ModerationChecks", "Errors"} <= names


def _emitted_names(capsys) -> list[str]:
    out = capsys.readouterr().out
    return [
        metric["Name"]
        for line in out.splitlines()
        if '"_aws"' in line
        for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    ]


def test_moderation_failing_closed_emits_moderation_failed_closed(client, chain, capsys):
    from chatbot_contracts.metrics import Metric

    capsys.readouterr()
    assert ask(client, "question-21").status_code == 200
    assert Metric.MODERATION_FAILED_CLOSED not in _emitted_names(capsys)
    chain.set_faults(moderation={"model_error": 5})
    assert ask(client, "question-22").status_code == 503
    assert Metric.MODERATION_FAILED_CLOSED in _emitted_names(capsys)


def test_content_filter_ending_emits_content_filter_endings(client, capsys):
    from chatbot_contracts.metrics import Metric

    capsys.readouterr()
    assert ask(client, "question-23").json()["choices"][0]["finish_reason"] == "stop"
    assert Metric.CONTENT_FILTER_ENDINGS not in _emitted_names(capsys)
    body = ask(client, f"please {FORBIDDEN} now").json()
    assert body["choices"][0]["finish_reason"] == "content_filter"
    assert _emitted_names(capsys).count(Metric.CONTENT_FILTER_ENDINGS) == 1


def test_new_session_emits_sessions_created_and_a_continuation_does_not(client, capsys):
    from chatbot_contracts.metrics import Metric

    capsys.readouterr()
    first = ask(client, "question-24").json()
    assert _emitted_names(capsys).count(Metric.SESSIONS_CREATED) == 1
    follow_up = ask(client, "question-25", session_id=first["chatbot"]["session_id"])
    assert follow_up.status_code == 200
    assert Metric.SESSIONS_CREATED not in _emitted_names(capsys)
