"""boto3's sagemaker-runtime streams token lines from the chat container through the emulator."""

from __future__ import annotations

import json

import boto3
import pytest

from tests.e2e.conftest import LocalStack


@pytest.mark.timeout(90, func_only=True)  # the stack fixture has its own deadline
def test_invoke_endpoint_with_response_stream_yields_token_lines(local_stack: LocalStack):
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=local_stack.emulator_url, region_name="us-east-1"
    )
    request = {
        "inputs": [{"role": "user", "content": "Name one thing a data engineer builds."}],
        "parameters": {"max_new_tokens": 8, "temperature": 0.0, "no_retrieval": True},
        "stream": True,
    }

    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=local_stack.chat_endpoint,
        Body=json.dumps(request),
        ContentType="application/json",
        Accept="application/jsonlines",
    )
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event]

    lines = [json.loads(line) for line in b"".join(parts).splitlines() if line.strip()]
    tokens = [line["token"]["text"] for line in lines if "token" in line]
    assert len(tokens) >= 2
    final = lines[-1]
    assert final["generated_text"] == "".join(tokens)
    assert final["details"]["finish_reason"] in {"stop", "length"}
