"""Inference components scaled to zero: named in each call, 503 model_waking_up while asleep."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from chatbot_contracts.metrics import Metric
from front_door.app import build_app
from front_door.endpoint_client import is_no_capacity_error, map_client_error
from front_door.errors import ModelWakingUpError, UpstreamModelError
from tests.front_door.test_api import ask, caller, session

pytestmark = pytest.mark.timeout(120)

CHAT_IC = "chatbot-test-chat-ic"
MODERATION_IC = "chatbot-test-moderation-ic"
NO_CAPACITY = (
    "Inference Component has no capacity to process this request. ApplicationAutoScaling may "
    "be in-progress (if configured) or try to increase the capacity by invoking "
    "UpdateInferenceComponentRuntimeConfig API."
)


def _client_error(code: str, message: str, status: int = 400) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "InvokeEndpoint")


def test_only_the_no_capacity_validation_error_means_waking_up() -> None:
    waking = map_client_error(_client_error("ValidationError", NO_CAPACITY), wake_retry_after_s=42)
    assert isinstance(waking, ModelWakingUpError)
    assert (waking.status_code, waking.code) == (503, "model_waking_up")
    assert waking.headers() == {"Retry-After": "42"}
    other = map_client_error(_client_error("ValidationError", "Endpoint x not found."))
    assert isinstance(other, UpstreamModelError)
    assert not is_no_capacity_error({"Code": "ModelError", "Message": "no capacity"})


@pytest.fixture(scope="module")
def component_emulator(chain: Any, serve: Any) -> Iterator[str]:
    """An emulator whose endpoints host inference components, before the chain's containers."""
    from local.sagemaker_emulator import EmulatorSettings
    from local.sagemaker_emulator import build_app as build_emulator

    settings = EmulatorSettings(
        endpoints={
            "chatbot-test-chat": chain.containers["chat"],
            "chatbot-test-moderation": chain.containers["moderation"],
        },
        components={CHAT_IC: "chatbot-test-chat", MODERATION_IC: "chatbot-test-moderation"},
        wake_after_s=60,
    )
    with serve(build_emulator(settings)) as server:
        yield server.url


@pytest.fixture(scope="module")
def front_door(
    chain: Any, module_session_table: str, serve: Any, component_emulator: str
) -> Iterator[str]:
    settings = chain.settings(
        module_session_table,
        sagemaker_endpoint_url=component_emulator,
        chat_component=CHAT_IC,
        moderation_component=MODERATION_IC,
        wake_retry_after_s=7,
        endpoint_max_attempts=1,
    )
    with serve(build_app(settings)) as server:
        yield server.url


@pytest.fixture
def client(front_door: str, component_emulator: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front_door, timeout=60) as http:
        yield http
    httpx.delete(f"{component_emulator}/_capacity").raise_for_status()


def _sleep(emulator: str, *targets: str) -> None:
    body = {target: {"wake_after_s": 60} for target in targets}
    httpx.put(f"{emulator}/_capacity", json=body).raise_for_status()


def test_both_models_are_invoked_through_their_components(
    client: httpx.Client, component_emulator: str
) -> None:
    httpx.delete(f"{component_emulator}/_stats").raise_for_status()
    response = ask(client, "question-20", stream=True)
    assert response.status_code == 200, response.text
    requests = httpx.get(f"{component_emulator}/_stats").json()["last_requests"]
    assert {(r["endpoint"], r["component"]) for r in requests} == {
        ("chatbot-test-chat", CHAT_IC),
        ("chatbot-test-moderation", MODERATION_IC),
    }


@pytest.mark.parametrize("asleep", [CHAT_IC, MODERATION_IC])
@pytest.mark.parametrize("use_stream", [False, True])
def test_asleep_is_503_with_retry_after_and_writes_nothing(
    client: httpx.Client,
    component_emulator: str,
    scan_table: Any,
    module_session_table: str,
    asleep: str,
    use_stream: bool,
) -> None:
    session_id = ask(client, "question-21").json()["session_id"]
    httpx.delete(f"{component_emulator}/_stats").raise_for_status()
    before = scan_table(module_session_table)
    _sleep(component_emulator, asleep)
    for continued in (True, False):
        extra = {"session_id": session_id} if continued else {}
        response = ask(client, "question-22", stream=use_stream, **extra)
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "7"
        error = response.json()["error"]
        assert (error["code"], error["type"]) == ("model_waking_up", "service_unavailable")
    # Moderation asleep fails closed: the chat model was never called.
    refused = httpx.get(f"{component_emulator}/_capacity").json()["no_capacity_failures"]
    assert set(refused) == {asleep}
    assert scan_table(module_session_table) == before
    httpx.delete(f"{component_emulator}/_capacity").raise_for_status()
    assert [m["content"] for m in session(client, session_id)["messages"]] == [
        "question-21",
        "answer-21",
    ]


def test_waking_up_emits_its_metric(
    client: httpx.Client, component_emulator: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _sleep(component_emulator, CHAT_IC)
    capsys.readouterr()
    response = client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "question-23"}]},
        headers=caller("metrics"),
    )
    assert response.status_code == 503
    documents = [
        json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line
    ]
    names = {
        metric["Name"]
        for doc in documents
        for directive in doc["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    assert {Metric.MODEL_WAKING_UP.value, "Errors"} <= names


def test_a_model_that_woke_up_answers(client: httpx.Client, component_emulator: str) -> None:
    httpx.put(
        f"{component_emulator}/_capacity", json={CHAT_IC: {"wake_after_s": 0.3}}
    ).raise_for_status()
    assert ask(client, "question-24").status_code == 503
    time.sleep(0.4)
    answered = ask(client, "question-24")
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == "answer-24"
