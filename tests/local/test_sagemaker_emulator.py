"""The SageMaker runtime emulator, driven by the unmodified boto3 client and botocore's parser."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import (
    ClientError,
    EventStreamError,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from local.sagemaker_emulator import EmulatorSettings, build_app, encode_event, split_parts

pytestmark = pytest.mark.timeout(60)

CHAT = "chatbot-test-chat"
MODERATION = "chatbot-test-moderation"
# Multi-byte characters on purpose: random part splits must be able to cut through them.
TOKENS = [" Ein", " naïve", " café", " 🌍", " — ", "日本語", " done"]


def jsonlines(tokens: list[str]) -> list[bytes]:
    lines = [json.dumps({"token": {"text": t}}, ensure_ascii=False) + "\n" for t in tokens]
    final = {"generated_text": "".join(tokens), "details": {"finish_reason": "stop"}}
    lines.append(json.dumps(final, ensure_ascii=False) + "\n")
    return [line.encode() for line in lines]


EXPECTED = b"".join(jsonlines(TOKENS))


class ContainerStub:
    """A container-protocol upstream serving plain jsonlines bytes; the emulator only forwards."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.closed_early = 0
        self.waiting = 0
        self.all_waiting: asyncio.Event | None = None
        self.app = FastAPI()
        self.app.post("/invocations", response_model=None)(self.invocations)

    async def invocations(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append({"headers": dict(request.headers), "body": body})
        command = json.loads(body) if body.startswith(b"{") else {}
        if "status" in command:
            return JSONResponse({"error": {"message": "bad input"}}, status_code=command["status"])
        echo = {"x-amzn-sagemaker-custom-attributes": "served-by=stub"}
        if not command.get("stream", True):
            return JSONResponse({"generated_text": "".join(TOKENS)}, headers=echo)
        lines = jsonlines(TOKENS * command.get("repeat", 1))
        return StreamingResponse(
            self.stream(
                lines, command.get("delay", 0.0), command.get("break_after"), command.get("barrier")
            ),
            media_type="application/jsonlines",
            headers=echo,
        )

    async def stream(
        self, lines: list[bytes], delay: float, break_after: int | None, barrier: int | None
    ) -> AsyncIterator[bytes]:
        finished = False
        try:
            if barrier is not None:
                # Hold every stream open until `barrier` of them are: proves real concurrency.
                yield lines[0]
                lines = lines[1:]
                if self.all_waiting is None:
                    self.all_waiting = asyncio.Event()
                self.waiting += 1
                if self.waiting == barrier:
                    self.all_waiting.set()
                await asyncio.wait_for(self.all_waiting.wait(), timeout=30)
            for index, line in enumerate(lines):
                if index == break_after:
                    raise RuntimeError("container died mid-stream")
                if delay:
                    await asyncio.sleep(delay)
                yield line
            finished = True
        finally:
            if not finished:
                self.closed_early += 1


@pytest.fixture(scope="module")
def container() -> ContainerStub:
    return ContainerStub()


@pytest.fixture(scope="module")
def emulator_url(serve_app: Any, container: ContainerStub) -> Iterator[str]:
    with serve_app(container.app) as container_url:
        settings = EmulatorSettings(
            endpoints={CHAT: container_url, MODERATION: container_url},
            stream_read_timeout_s=2.0,
            invoke_timeout_s=2.0,
        )
        with serve_app(build_app(settings)) as url:
            yield url


@pytest.fixture
def runtime(emulator_url: str) -> Any:
    httpx.delete(f"{emulator_url}/_faults").raise_for_status()
    httpx.delete(f"{emulator_url}/_stats").raise_for_status()
    return runtime_client(emulator_url, attempts=1)


def runtime_client(url: str, attempts: int) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": attempts, "mode": "standard"}),
    )


def put_faults(url: str, faults: dict[str, Any]) -> None:
    httpx.put(f"{url}/_faults", json=faults).raise_for_status()


def stream(runtime: Any, body: dict[str, Any], endpoint: str = CHAT) -> dict[str, Any]:
    return runtime.invoke_endpoint_with_response_stream(  # type: ignore[no-any-return]
        EndpointName=endpoint, Body=json.dumps(body), ContentType="application/json"
    )


def payload_parts(response: dict[str, Any]) -> list[bytes]:
    parts = []
    for event in response["Body"]:
        assert list(event) == ["PayloadPart"]
        parts.append(event["PayloadPart"]["Bytes"])
    return parts


def test_encode_event_is_read_by_botocore() -> None:
    headers = {":message-type": "event", ":event-type": "PayloadPart", "x-é": "ü"}
    payload = "data ✓".encode()
    buffer = EventStreamBuffer()
    buffer.add_data(encode_event(headers, payload) + encode_event({"a": "b"}, b""))
    first, second = list(buffer)
    assert first.headers == headers
    assert first.payload == payload
    assert second.headers == {"a": "b"}
    assert second.payload == b""


def test_split_parts() -> None:
    data = bytes(range(100))
    assert list(split_parts(data, None, None)) == [data]
    assert [len(p) for p in split_parts(data, 30, None)] == [30, 30, 30, 10]
    sizes = [len(p) for p in split_parts(data, 7, random.Random(3))]
    assert sum(sizes) == 100
    assert max(sizes) <= 7
    assert len(set(sizes)) > 1
    assert sizes == [len(p) for p in split_parts(data, 7, random.Random(3))]
    assert list(split_parts(b"", 3, None)) == []


def test_invoke_endpoint(runtime: Any, container: ContainerStub, emulator_url: str) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=CHAT,
        Body=json.dumps({"inputs": "hi", "stream": False}),
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
    )
    assert json.loads(response["Body"].read()) == {"generated_text": "".join(TOKENS)}
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "served-by=stub"
    assert response["ResponseMetadata"]["RequestId"]
    sent = container.requests[-1]
    assert sent["headers"]["content-type"] == "application/json"
    assert sent["headers"]["accept"] == "application/json"
    assert sent["headers"]["x-amzn-sagemaker-custom-attributes"] == "trace=1"
    assert json.loads(sent["body"]) == {"inputs": "hi", "stream": False}
    stats = httpx.get(f"{emulator_url}/_stats").json()
    assert stats["invocations"] == {CHAT: 1}
    assert stats["last_requests"][-1]["operation"] == "invoke"


def test_stream_forwards_bytes_as_payload_parts(runtime: Any, container: ContainerStub) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=CHAT,
        Body=json.dumps({"inputs": "hi"}),
        ContentType="application/json",
        Accept="application/jsonlines",
        CustomAttributes="trace=2",
    )
    assert response["ContentType"] == "application/jsonlines"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "served-by=stub"
    parts = payload_parts(response)
    assert b"".join(parts) == EXPECTED
    assert len(parts) > 1
    sent = container.requests[-1]["headers"]
    assert sent["accept"] == "application/jsonlines"
    assert sent["x-amzn-sagemaker-custom-attributes"] == "trace=2"


def test_parts_split_at_fixed_size(runtime: Any, emulator_url: str) -> None:
    put_faults(emulator_url, {CHAT: {"max_part_bytes": 1}})
    parts = payload_parts(stream(runtime, {"inputs": "hi"}))
    assert b"".join(parts) == EXPECTED
    assert {len(p) for p in parts} == {1}


def test_parts_split_at_random_inside_characters(runtime: Any, emulator_url: str) -> None:
    put_faults(emulator_url, {CHAT: {"max_part_bytes": 5, "split_seed": 11}})
    first = payload_parts(stream(runtime, {"inputs": "hi"}))
    second = payload_parts(stream(runtime, {"inputs": "hi"}))
    assert b"".join(first) == EXPECTED
    assert first == second
    assert max(len(p) for p in first) <= 5
    cut_characters = 0
    for part in first:
        try:
            part.decode("utf-8")
        except UnicodeDecodeError:
            cut_characters += 1
    assert cut_characters > 0
    assert any(b"\n" not in p and p.count(b'"') % 2 for p in first)


def test_unknown_endpoint_is_a_validation_error(runtime: Any) -> None:
    for call in (runtime.invoke_endpoint, runtime.invoke_endpoint_with_response_stream):
        with pytest.raises(ClientError) as raised:
            call(EndpointName="nope", Body=b"{}")
        error = raised.value.response
        assert error["Error"]["Code"] == "ValidationError"
        assert error["Error"]["Message"] == "Endpoint nope of account 123456789012 not found."
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_container_4xx_is_a_model_error(runtime: Any) -> None:
    for call in (runtime.invoke_endpoint, runtime.invoke_endpoint_with_response_stream):
        with pytest.raises(runtime.exceptions.ModelError) as raised:
            call(EndpointName=CHAT, Body=json.dumps({"status": 422}))
        error = raised.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert error["OriginalStatusCode"] == 422
        assert json.loads(error["OriginalMessage"]) == {"error": {"message": "bad input"}}
        assert "Received client error (422) from AllTraffic" in error["Error"]["Message"]
        assert error["LogStreamArn"].startswith("arn:aws:logs:us-east-1:123456789012:")


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        ("throttle", "ThrottlingException", 400),
        ("model_not_ready", "ModelNotReadyException", 429),
        ("service_unavailable", "ServiceUnavailable", 503),
        ("internal_failure", "InternalFailure", 500),
        ("model_error", "ModelError", 424),
    ],
)
def test_injected_errors_before_the_stream(
    runtime: Any, emulator_url: str, container: ContainerStub, fault: str, code: str, status: int
) -> None:
    calls_before = len(container.requests)
    put_faults(emulator_url, {CHAT: {fault: 2}})
    for call in (runtime.invoke_endpoint, runtime.invoke_endpoint_with_response_stream):
        with pytest.raises(ClientError) as raised:
            call(EndpointName=CHAT, Body=b'{"inputs": "hi"}')
        assert raised.value.response["Error"]["Code"] == code
        assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert len(container.requests) == calls_before
    # the counter is spent: the next call reaches the container
    assert b"".join(payload_parts(stream(runtime, {"inputs": "hi"}))) == EXPECTED
    assert httpx.get(f"{emulator_url}/_stats").json()["errors"] == {code: 2}


def test_model_error_fault_carries_original_status(runtime: Any, emulator_url: str) -> None:
    put_faults(
        emulator_url,
        {CHAT: {"model_error": 1, "model_error_status": 503, "model_error_message": "gpu lost"}},
    )
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint(EndpointName=CHAT, Body=b"{}")
    assert raised.value.response["OriginalStatusCode"] == 503
    assert raised.value.response["OriginalMessage"] == "gpu lost"
    assert "Received server error (503)" in raised.value.response["Error"]["Message"]


def test_botocore_retries_through_throttling(emulator_url: str, runtime: Any) -> None:
    put_faults(emulator_url, {CHAT: {"throttle": 2}})
    retrying = runtime_client(emulator_url, attempts=3)
    response = stream(retrying, {"inputs": "hi"})
    assert b"".join(payload_parts(response)) == EXPECTED
    assert response["ResponseMetadata"]["RetryAttempts"] == 2


def test_model_stream_error_mid_stream(runtime: Any, emulator_url: str) -> None:
    put_faults(
        emulator_url,
        {
            CHAT: {
                "stream_error": 1,
                "stream_error_after_parts": 3,
                "stream_error_code": "ModelInvocationTimeExceeded",
                "max_part_bytes": 4,
            }
        },
    )
    received: list[bytes] = []
    events = stream(runtime, {"inputs": "hi"})["Body"]
    with pytest.raises(EventStreamError) as raised:
        received.extend(event["PayloadPart"]["Bytes"] for event in events)
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    assert raised.value.response["Error"]["Message"] == "injected model stream error"
    assert received == [EXPECTED[0:4], EXPECTED[4:8], EXPECTED[8:12]]
    assert b"".join(payload_parts(stream(runtime, {"inputs": "hi"}))) == EXPECTED


def test_model_stream_error_carries_error_code(emulator_url: str) -> None:
    put_faults(emulator_url, {CHAT: {"stream_error": 1, "stream_error_code": "StreamBroken"}})
    response = httpx.post(
        f"{emulator_url}/endpoints/{CHAT}/invocations-response-stream", content=b"{}"
    )
    assert response.headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(response.content)
    (message,) = list(buffer)
    assert message.headers[":message-type"] == "exception"
    assert message.headers[":exception-type"] == "ModelStreamError"
    assert json.loads(message.payload) == {
        "Message": "injected model stream error",
        "ErrorCode": "StreamBroken",
    }


def test_internal_stream_failure_mid_stream(runtime: Any, emulator_url: str) -> None:
    put_faults(emulator_url, {CHAT: {"stream_failure": 1, "stream_failure_after_parts": 1}})
    received: list[bytes] = []
    events = stream(runtime, {"inputs": "hi"})["Body"]
    with pytest.raises(EventStreamError) as raised:
        received.extend(event["PayloadPart"]["Bytes"] for event in events)
    assert raised.value.response["Error"]["Code"] == "InternalStreamFailure"
    assert len(received) == 1


def test_container_dying_mid_stream_is_stream_broken(runtime: Any) -> None:
    received: list[bytes] = []
    events = stream(runtime, {"inputs": "hi", "break_after": 2})["Body"]
    with pytest.raises(EventStreamError) as raised:
        received.extend(event["PayloadPart"]["Bytes"] for event in events)
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    assert b"".join(received) == EXPECTED[: len(b"".join(jsonlines(TOKENS)[:2]))]


def test_silent_container_times_out(runtime: Any) -> None:
    events = stream(runtime, {"inputs": "hi", "delay": 3.0})["Body"]
    with pytest.raises(EventStreamError) as raised:
        list(events)
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    with pytest.raises(runtime.exceptions.ModelError, match="timed out"):
        runtime.invoke_endpoint(EndpointName=CHAT, Body=json.dumps({"delay": 3.0}))


def test_slow_first_byte(runtime: Any, emulator_url: str) -> None:
    put_faults(emulator_url, {CHAT: {"first_byte_delay_s": 0.5}})
    started = time.monotonic()
    response = stream(runtime, {"inputs": "hi"})
    assert time.monotonic() - started >= 0.5
    assert b"".join(payload_parts(response)) == EXPECTED


def test_client_disconnect_closes_the_upstream_stream(
    runtime: Any, emulator_url: str, container: ContainerStub
) -> None:
    closed_before = container.closed_early
    url = f"{emulator_url}/endpoints/{CHAT}/invocations-response-stream"
    body = json.dumps({"inputs": "hi", "repeat": 200, "delay": 0.01})
    with httpx.stream("POST", url, content=body) as response:
        first = next(response.iter_raw())
        assert first
    deadline = time.monotonic() + 10
    while container.closed_early == closed_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert container.closed_early == closed_before + 1


def test_fault_control_api(emulator_url: str, runtime: Any) -> None:
    assert (
        httpx.put(f"{emulator_url}/_faults", json={"unknown": {"throttle": 1}}).status_code == 400
    )
    assert httpx.put(f"{emulator_url}/_faults", json={CHAT: {"throttle": -1}}).status_code == 422
    put_faults(emulator_url, {MODERATION: {"throttle": 1}})
    assert httpx.get(f"{emulator_url}/_faults").json()[MODERATION]["throttle"] == 1
    # faults are per endpoint
    assert b"".join(payload_parts(stream(runtime, {"inputs": "hi"}))) == EXPECTED
    with pytest.raises(ClientError, match="ThrottlingException"):
        stream(runtime, {"inputs": "hi"}, endpoint=MODERATION)


def test_64_concurrent_streams(emulator_url: str, runtime: Any) -> None:
    url = f"{emulator_url}/endpoints/{CHAT}/invocations-response-stream"
    body = json.dumps({"inputs": "hi", "barrier": 64})

    async def one(http: httpx.AsyncClient) -> bytes:
        buffer = EventStreamBuffer()
        async with http.stream("POST", url, content=body) as response:
            async for chunk in response.aiter_raw():
                buffer.add_data(chunk)
        return b"".join(message.payload for message in buffer)

    async def run_all() -> list[bytes]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=100), timeout=30) as http:
            return await asyncio.gather(*(one(http) for _ in range(64)))

    assert asyncio.run(run_all()) == [EXPECTED] * 64
    stats = httpx.get(f"{emulator_url}/_stats").json()
    assert stats["max_active_streams"] == 64
    assert stats["active_streams"] == 0


def test_command_line(serve_app: Any, container: ContainerStub) -> None:
    root = Path(__file__).resolve().parents[2]
    bad = subprocess.run(
        [sys.executable, "-m", "local.sagemaker_emulator", "--endpoint", "no-url"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "NAME=http://HOST:PORT" in bad.stderr
    with serve_app(container.app) as container_url, socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "local.sagemaker_emulator", "--port", str(port)),
                *("--endpoint", f"{CHAT}={container_url}", "--max-part-bytes", "2"),
            ],
            cwd=root,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"{url}/ping").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.05)
            parts = payload_parts(stream(runtime_client(url, attempts=1), {"inputs": "hi"}))
            assert b"".join(parts) == EXPECTED
            assert max(len(p) for p in parts) == 2
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_unreachable_container_is_service_unavailable(serve_app: Any) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings = EmulatorSettings(endpoints={CHAT: f"http://127.0.0.1:{closed_port}"})
    with serve_app(build_app(settings)) as url:
        client = runtime_client(url, attempts=1)
        for call in (client.invoke_endpoint, client.invoke_endpoint_with_response_stream):
            with pytest.raises(ClientError) as raised:
                call(EndpointName=CHAT, Body=b"{}")
            assert raised.value.response["Error"]["Code"] == "ServiceUnavailable"
            assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
