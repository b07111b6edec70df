"""Schemathesis over the app's OpenAPI, in process over ASGI against the real upstream chain."""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from front_door.app import build_app

# Rules the OpenAPI schema cannot state (the last message is the user's; size and token limits
# come from settings) make some schema-valid bodies a 400/413, so that one check is left out;
# every other check (no 5xx, documented statuses and content types, response schemas,
# negative data rejected) applies.

PRINCIPAL = {
    "x-amzn-request-context": json.dumps(
        {"requestId": "fuzz", "identity": {"userArn": "arn:aws:iam::123456789012:user/fuzz"}}
    )
}
MIN_CASES = 1000
# Examples per operation and mode; cheap operations get more, for >= MIN_CASES in ~30 s.
EXAMPLES: dict[str, dict[GenerationMode, int]] = {
    "POST /v1/chat/completions": {GenerationMode.POSITIVE: 170, GenerationMode.NEGATIVE: 100},
    "GET /v1/sessions": {GenerationMode.POSITIVE: 90, GenerationMode.NEGATIVE: 60},
    "GET /v1/sessions/{session_id}": {GenerationMode.POSITIVE: 320},
    "DELETE /v1/sessions/{session_id}": {GenerationMode.POSITIVE: 320},
    "GET /healthz": {GenerationMode.POSITIVE: 5},
    "GET /v1/models": {GenerationMode.POSITIVE: 5},
    "GET /v1/models/{model_id}": {GenerationMode.POSITIVE: 40},
}


@pytest.fixture(scope="module")
def api_schema(chain: Any, module_session_table: str) -> Any:
    app = build_app(chain.settings(module_session_table))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


@pytest.mark.timeout(300)
def test_no_generated_request_gets_a_5xx_or_breaks_the_schema(api_schema: Any) -> None:
    # schemathesis.pytest.from_fixture reads a node attribute pytest 9 removed, so the
    # strategies are driven with hypothesis directly.
    calls: dict[str, int] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES[operation.label].items():

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
                case.call_and_validate(
                    headers=PRINCIPAL, excluded_checks=[positive_data_acceptance]
                )

            run()
    assert sum(calls.values()) >= MIN_CASES, calls
    assert {label.split()[0] for label in calls} == {"GET", "POST", "DELETE"}
