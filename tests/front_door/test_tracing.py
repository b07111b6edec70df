"""X-Ray tracing of the front door: off locally, botocore patched in Lambda, trace header passed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

from front_door.observability import TRACE_ID_VARIABLE, TraceHeaderMiddleware, install_tracing


def test_tracing_is_off_in_tests_and_adds_nothing() -> None:
    from fastapi import FastAPI

    app = FastAPI()
    assert os.environ["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert install_tracing(app) is False
    assert app.user_middleware == []


def test_in_lambda_the_tracer_patches_botocore_for_sagemaker_and_dynamodb_subsegments() -> None:
    script = (
        "from fastapi import FastAPI\n"
        "from aws_xray_sdk.core import patcher\n"
        "from front_door.observability import install_tracing, TraceHeaderMiddleware\n"
        "app = FastAPI()\n"
        "assert install_tracing(app)\n"
        "assert [m.cls for m in app.user_middleware] == [TraceHeaderMiddleware]\n"
        "print(sorted(patcher._PATCHED_MODULES))\n"
    )
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "false", "LAMBDA_TASK_ROOT": "/var/task"}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "botocore" in result.stdout


def test_middleware_hands_the_adapter_trace_header_to_the_xray_sdk(monkeypatch: Any) -> None:
    monkeypatch.delenv(TRACE_ID_VARIABLE, raising=False)
    seen: list[str | None] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(os.environ.get(TRACE_ID_VARIABLE))

    header = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
    scope = {"type": "http", "headers": [(b"x-amzn-trace-id", header.encode())]}
    asyncio.run(TraceHeaderMiddleware(app)(scope, None, None))
    assert seen == [header]
