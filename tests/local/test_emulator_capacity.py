"""The emulator's inference components and scale to zero: refused asleep, served once awake."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from fastapi import FastAPI
from fastapi.responses import JSONResponse, StreamingResponse

from local.sagemaker_emulator import EmulatorSettings, SleepRequest, build_app
from local.sagemaker_emulator_faults import NO_CAPACITY_MESSAGE, Capacity

pytestmark = pytest.mark.timeout(60)

CHAT = "chatbot-test-chat"
MODERATION = "chatbot-test-moderation"
CHAT_COMPONENT = "chatbot-test-chat-ic"


def _container() -> FastAPI:
    app = FastAPI()

    @app.post("/invocations", response_model=None)
    async def invocations() -> JSONResponse | StreamingResponse:
        return JSONResponse({"label": "casual", "generated_text": "hello"})

    return app


@pytest.fixture(scope="module")
def emulator_url(serve_app: Any) -> Iterator[str]:
    with serve_app(_container()) as container_url:
        settings = EmulatorSettings(
            endpoints={CHAT: container_url, MODERATION: container_url},
            components={CHAT_COMPONENT: CHAT},
            wake_after_s=0.5,
        )
        with serve_app(build_app(settings)) as url:
            yield url


@pytest.fixture
def runtime(emulator_url: str) -> Iterator[BaseClient]:
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )
    yield client
    httpx.delete(f"{emulator_url}/_capacity")
    httpx.delete(f"{emulator_url}/_stats")


def _error(exc: pytest.ExceptionInfo[ClientError]) -> tuple[str, str, int]:
    response: dict[str, Any] = exc.value.response
    return (
        response["Error"]["Code"],
        response["Error"]["Message"],
        response["ResponseMetadata"]["HTTPStatusCode"],
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_capacity_wakes_a_target_only_after_a_refused_request_and_the_wake_time() -> None:
    clock = FakeClock()
    capacity = Capacity(wake_after_s=60, asleep=["chat"], clock=clock)
    clock.now += 600  # asleep for long: nothing wakes it but a request
    assert capacity.admit("chat") is False  # starts the wake-up
    clock.now += 59
    assert capacity.admit("chat") is False
    clock.now += 1
    assert capacity.admit("chat") is True
    assert capacity.admit("chat") is True
    assert capacity.admit("moderation") is True
    assert capacity.refused == {"chat": 2}


def test_capacity_can_be_put_to_sleep_and_woken_by_hand() -> None:
    clock = FakeClock()
    capacity = Capacity(wake_after_s=60, clock=clock)
    capacity.set("chat", SleepRequest(wake_after_s=5))
    assert capacity.snapshot()["asleep"] == {"chat": {"wake_after_s": 5, "waking_for_s": None}}
    assert capacity.admit("chat") is False
    clock.now += 2
    assert capacity.snapshot()["asleep"]["chat"]["waking_for_s"] == 2
    capacity.set("chat", SleepRequest(asleep=False))
    assert capacity.admit("chat") is True
    capacity.set("moderation", SleepRequest())
    capacity.clear()
    assert capacity.admit("moderation") is True
    assert capacity.refused == {"chat": 1}  # counted until the stats are reset


def test_component_endpoint_requires_the_component_name(runtime: BaseClient) -> None:
    with pytest.raises(ClientError) as missing:
        runtime.invoke_endpoint(EndpointName=CHAT, Body=b"{}", ContentType="application/json")
    code, message, status = _error(missing)
    assert (code, status) == ("ValidationError", 400)
    assert "Inference Component Name header is required" in message
    with pytest.raises(ClientError) as wrong:
        runtime.invoke_endpoint(
            EndpointName=CHAT,
            InferenceComponentName="another",
            Body=b"{}",
            ContentType="application/json",
        )
    assert "Inference Component another not found" in _error(wrong)[1]


def test_component_is_invoked_by_name(runtime: BaseClient, emulator_url: str) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=CHAT,
        InferenceComponentName=CHAT_COMPONENT,
        Body=b"{}",
        ContentType="application/json",
    )
    assert response["Body"].read() == b'{"label":"casual","generated_text":"hello"}'
    last = httpx.get(f"{emulator_url}/_stats").json()["last_requests"][-1]
    assert (last["endpoint"], last["component"]) == (CHAT, CHAT_COMPONENT)


def test_sleeping_component_refuses_then_wakes(runtime: BaseClient, emulator_url: str) -> None:
    put = httpx.put(f"{emulator_url}/_capacity", json={CHAT_COMPONENT: {"wake_after_s": 0.4}})
    assert put.status_code == 200
    assert CHAT_COMPONENT in put.json()["asleep"]
    target = {"EndpointName": CHAT, "InferenceComponentName": CHAT_COMPONENT}
    for _ in range(2):
        with pytest.raises(ClientError) as refused:
            runtime.invoke_endpoint_with_response_stream(
                **target, Body=b"{}", ContentType="application/json"
            )
        assert _error(refused) == ("ValidationError", NO_CAPACITY_MESSAGE, 400)
    time.sleep(0.5)
    streamed = runtime.invoke_endpoint_with_response_stream(
        **target, Body=b"{}", ContentType="application/json"
    )
    assert b"".join(e["PayloadPart"]["Bytes"] for e in streamed["Body"] if "PayloadPart" in e)
    stats = httpx.get(f"{emulator_url}/_stats").json()
    assert stats["no_capacity_failures"] == {CHAT_COMPONENT: 2}
    assert stats["invocations"] == {CHAT: 1}  # refused requests are not invocations


def test_endpoint_asleep_from_the_setting_wakes_after_a_request(serve_app: Any) -> None:
    with serve_app(_container()) as container_url:
        settings = EmulatorSettings(
            endpoints={MODERATION: container_url}, asleep=[MODERATION], wake_after_s=0.5
        )
        with serve_app(build_app(settings)) as url:
            runtime = boto3.client(
                "sagemaker-runtime",
                endpoint_url=url,
                region_name="us-east-1",
                config=Config(retries={"max_attempts": 1, "mode": "standard"}),
            )
            call = {"EndpointName": MODERATION, "Body": b"{}", "ContentType": "application/json"}
            with pytest.raises(ClientError) as refused:
                runtime.invoke_endpoint(**call)
            assert "no capacity" in _error(refused)[1]
            time.sleep(0.6)
            assert b"casual" in runtime.invoke_endpoint(**call)["Body"].read()


def test_capacity_route_refuses_unknown_names(emulator_url: str) -> None:
    response = httpx.put(f"{emulator_url}/_capacity", json={"nope": {}})
    assert response.status_code == 400
    assert "Unknown endpoints or components: nope" in response.text
