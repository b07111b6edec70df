"""Every failure path end to end: each test names the fault, what the client sees, what is stored.

The front door runs against the real chain (emulator, container servers, scripted backends) and
reaches the DynamoDB server through ``local.dynamodb_fault_proxy``, which injects DynamoDB's
transient failures that the one-request-at-a-time local server never produces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from front_door.app import build_app
from local.dynamodb_fault_proxy import build_app as build_proxy
from tests.front_door.conftest import MODERATION_OUTAGE, new_session_table

pytestmark = pytest.mark.timeout(120)

IDENTITY = {"identity": {"userArn": "arn:aws:iam::123456789012:user/faults"}}
HEADERS = {"x-amzn-request-context": json.dumps({"requestId": "req-faults", **IDENTITY})}
READ_TIMEOUT_S = 0.5
RETRIES = 1
"""botocore retries per DynamoDB call in this module (4 in production; fewer keeps it fast)."""


@pytest.fixture(scope="module")
def table(dynamodb) -> str:
    return new_session_table(dynamodb)


@pytest.fixture(scope="module")
def proxy(serve, dynamodb_url) -> Iterator[str]:
    with serve(build_proxy(dynamodb_url)) as server:
        yield server.url


@pytest.fixture(scope="module")
def client(chain, table, proxy, serve) -> Iterator[httpx.Client]:
    settings = chain.settings(
        table,
        dynamodb_endpoint_url=proxy,
        dynamodb_read_timeout_s=READ_TIMEOUT_S,
        dynamodb_retries=RETRIES,
    )
    with (
        serve(build_app(settings)) as server,
        httpx.Client(base_url=server.url, timeout=60, headers=HEADERS) as http,
    ):
        yield http


@pytest.fixture(autouse=True)
def no_faults(chain, proxy) -> Iterator[None]:
    chain.clear_faults()
    chain.search_down(False)
    httpx.delete(f"{proxy}/_faults").raise_for_status()
    yield
    httpx.delete(f"{proxy}/_faults").raise_for_status()
    chain.search_down(False)


def inject(proxy: str, operation: str, kind: str, times: int = 1, delay_s: float = 0.0) -> None:
    fault = {"operation": operation, "kind": kind, "times": times, "delay_s": delay_s}
    httpx.put(f"{proxy}/_faults", json=[fault]).raise_for_status()


def injected(proxy: str) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{proxy}/_stats").json()["injected"]
    return counts


def ask(client: httpx.Client, content: str, **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], **extra}
    return client.post("/v1/chat/completions", json=body)


def stream(client: httpx.Client, content: str) -> list[Any]:
    events: list[Any] = []
    body = {"messages": [{"role": "user", "content": content}], "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line.removeprefix("data: ")
                events.append(data if data == "[DONE]" else json.loads(data))
    return events


def stored(dynamodb, table: str, session_id: str) -> list[tuple[str, str]]:
    """(sk, content) of every item of the session, read from the server directly."""
    items = dynamodb.query(
        TableName=table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"SESSION#{session_id}"}},
        ConsistentRead=True,
    )["Items"]
    return [(i["sk"]["S"], i.get("content", {}).get("S", "")) for i in items]


def all_items(dynamodb, table: str) -> int:
    return int(dynamodb.scan(TableName=table, Select="COUNT")["Count"])


# --- DynamoDB faults -------------------------------------------------------------------------


def test_transaction_conflict_is_retried_and_the_turn_is_stored_once(
    client, proxy, dynamodb, table
):
    """Fault: TransactWriteItems cancelled with TransactionConflict three times in a row.

    Client sees: an ordinary 200 answer. Stored: the header and the turn's two messages,
    once (the store re-reads the count and appends after the "winner" each time).
    """
    first = ask(client, "question-20")
    session_id = first.json()["chatbot"]["session_id"]
    inject(proxy, "TransactWriteItems", "transaction_conflict", times=3)
    second = ask(client, "question-21", session_id=session_id)
    assert second.status_code == 200, second.text
    assert second.json()["choices"][0]["message"]["content"] == "answer-21"
    assert injected(proxy)["TransactWriteItems:transaction_conflict"] == 3
    contents = [content for sk, content in stored(dynamodb, table, session_id) if sk != "META"]
    assert contents == ["question-20", "answer-20", "question-21", "answer-21"]


def test_brief_throttling_is_absorbed_by_client_retries(client, proxy, dynamodb, table):
    """Fault: ProvisionedThroughputExceededException on the first write of a turn.

    Client sees: an ordinary 200 (botocore's standard retry mode retries throttling).
    Stored: the new session with its two messages, once.
    """
    inject(proxy, "TransactWriteItems", "throughput_exceeded", times=RETRIES)
    reply = ask(client, "question-22")
    assert reply.status_code == 200, reply.text
    session_id = reply.json()["chatbot"]["session_id"]
    assert len(stored(dynamodb, table, session_id)) == 3  # header + 2 messages


def test_persistent_throttling_is_a_429_and_stores_nothing(client, proxy, dynamodb, table):
    """Fault: ProvisionedThroughputExceededException on every attempt of a turn's write.

    Client sees: a 429 ``upstream_throttled`` with ``Retry-After`` (streamed, the same code
    arrives as the error event after the tokens, as ``test_api`` shows for other faults).
    Stored: nothing (the transaction never applied, so no half-written turn exists).
    """
    before = all_items(dynamodb, table)
    seen = injected(proxy).get("TransactWriteItems:throughput_exceeded", 0)
    inject(proxy, "TransactWriteItems", "throughput_exceeded", times=1 + RETRIES)
    reply = ask(client, "question-23")
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["code"] == "upstream_throttled"
    assert reply.headers["retry-after"] == "1"
    assert injected(proxy)["TransactWriteItems:throughput_exceeded"] == seen + 1 + RETRIES
    assert all_items(dynamodb, table) == before


def test_internal_error_once_is_retried_and_stored_once(client, proxy, dynamodb, table):
    """Fault: one HTTP 500 InternalServerError on the turn's write (not applied upstream).

    Client sees: an ordinary 200. Stored: the turn once.
    """
    inject(proxy, "TransactWriteItems", "internal_error")
    reply = ask(client, "question-25")
    assert reply.status_code == 200, reply.text
    session_id = reply.json()["chatbot"]["session_id"]
    assert [c for sk, c in stored(dynamodb, table, session_id) if sk != "META"] == [
        "question-25",
        "answer-25",
    ]


def test_slow_history_read_is_retried_then_a_503_when_it_stays_slow(client, proxy, dynamodb, table):
    """Fault: the history Query answers after 1 s, twice the client's read timeout.

    Client sees: once slow, an ordinary 200 (the retry is fast); always slow, a 503
    ``upstream_unavailable`` before any byte is streamed. Stored: the continued turn in the
    first case; nothing new in the second (history loads before anything is written).
    """
    session_id = ask(client, "question-26").json()["chatbot"]["session_id"]
    inject(proxy, "Query", "slow", times=1, delay_s=2 * READ_TIMEOUT_S)
    assert ask(client, "question-27", session_id=session_id).status_code == 200
    time.sleep(3 * READ_TIMEOUT_S)  # the slow original finishes before the next fault
    inject(proxy, "Query", "slow", times=1 + RETRIES, delay_s=2 * READ_TIMEOUT_S)
    reply = ask(client, "question-28", session_id=session_id)
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "upstream_unavailable"
    contents = [c for sk, c in stored(dynamodb, table, session_id) if sk != "META"]
    assert contents == ["question-26", "answer-26", "question-27", "answer-27"]


def test_slow_write_that_lands_late_is_not_stored_twice(client, proxy, dynamodb, table):
    """Fault: the turn's TransactWriteItems reaches DynamoDB 1 s late, after the client gave up
    and retried with the same ClientRequestToken.

    Client sees: an ordinary 200 (the retry went through). Stored: the turn once; the late
    original fails its condition (the header already exists) and changes nothing.
    """
    inject(proxy, "TransactWriteItems", "slow", times=1, delay_s=2 * READ_TIMEOUT_S)
    reply = ask(client, "question-29")
    assert reply.status_code == 200, reply.text
    session_id = reply.json()["chatbot"]["session_id"]
    time.sleep(3 * READ_TIMEOUT_S)  # let the delayed original reach the server
    assert [c for sk, c in stored(dynamodb, table, session_id) if sk != "META"] == [
        "question-29",
        "answer-29",
    ]


def test_unprocessed_items_exhausted_is_an_error_and_a_metric(
    client, proxy, dynamodb, table, capsys
):
    """Fault: BatchWriteItem returns every delete as UnprocessedItems on all 8 attempts.

    Client sees: 503 ``delete_incomplete`` naming how many messages were left (never a
    silent 200); the ``SessionDeleteIncomplete`` metric counts them. Stored: the header is
    gone (the session reads as 404 at once); the two messages remain until the TTL.
    """
    session_id = ask(client, "question-30").json()["chatbot"]["session_id"]
    inject(proxy, "BatchWriteItem", "unprocessed_items", times=8)
    capsys.readouterr()
    reply = client.delete(f"/v1/sessions/{session_id}")
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "delete_incomplete"
    assert "2 of its 2 messages" in error["message"]
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if "_aws" in line
    ]
    assert any(doc.get("SessionDeleteIncomplete") == [2.0] for doc in documents), documents
    assert client.get(f"/v1/sessions/{session_id}").status_code == 404
    assert [sk for sk, _ in stored(dynamodb, table, session_id)] == ["MSG#000000", "MSG#000001"]


# --- endpoint faults -------------------------------------------------------------------------


def test_retrieval_outage_answers_without_sources_and_says_why(client, chain, dynamodb, table):
    """Fault: the search API behind the chat container's retriever answers 503.

    Client sees: a 200 answer with ``chatbot.sources == []`` and ``chatbot.retrieval_error``
    giving the reason. Stored: the turn, the reply without sources.
    """
    chain.search_down(True)
    reply = ask(client, "question-31")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["choices"][0]["message"]["content"] == "answer-31"
    assert body["chatbot"]["sources"] == []
    assert "503" in body["chatbot"]["retrieval_error"]
    session = client.get(f"/v1/sessions/{body['chatbot']['session_id']}").json()
    assert session["messages"][1]["sources"] is None


def test_moderation_outage_mid_stream_ends_with_an_error_event(client, dynamodb, table):
    """Fault: the moderation endpoint fails (HTTP 500 from its backend) on an output window,
    after the input check passed and tokens were relayed.

    Client sees: the relayed tokens, then the error event ``moderation_unavailable`` with
    ``chatbot.session_id``, then ``[DONE]`` (nothing more is relayed unchecked). Stored: the
    user message and the reply as relayed so far, ``incomplete`` with finish_reason ``error``.
    """
    events = stream(client, "moderation outage please")
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert error["error"]["code"] == "moderation_unavailable"
    relayed = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert MODERATION_OUTAGE in relayed
    assert "word119" not in relayed
    session = client.get(f"/v1/sessions/{error['chatbot']['session_id']}").json()
    reply = session["messages"][1]
    assert (reply["incomplete"], reply["finish_reason"]) == (True, "error")
    assert reply["content"] == relayed


# Concurrency (100 sessions x 5 turns) runs through the whole local stack:
# tests/e2e/test_stack_failure_paths.py.
