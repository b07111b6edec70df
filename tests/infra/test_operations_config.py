"""Operations settings (roll-out, notifications, thresholds): each rule refuses, naming a field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.config import ENVIRONMENTS_CONTEXT_KEY, ConfigError, RolloutConfig, load_environment


def _with(context: dict[str, Any], env: str, changes: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(context)
    root = changed[ENVIRONMENTS_CONTEXT_KEY][env]
    for path, value in changes.items():
        node = root
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return changed


def _refused(context: dict[str, Any], env: str, changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as raised:
        load_environment(_with(context, env, changes), env)
    return str(raised.value)


def test_cdk_json_rollouts_per_environment(cdk_json_context: dict[str, Any]) -> None:
    dev, staging, prod = (
        load_environment(cdk_json_context, env).operations.rollout
        for env in ("dev", "staging", "prod")
    )
    assert (dev.traffic_shifting, dev.wait_interval_s) == ("ALL_AT_ONCE", 300)
    assert staging.traffic_shifting == "ALL_AT_ONCE"
    assert (prod.traffic_shifting, prod.canary_size_percent) == ("CANARY", 50)
    assert set(prod.rollback_alarms) >= {"invocation_5xx", "model_latency_p90"}


R = "operations.rollout"
T = "operations.thresholds"


@pytest.mark.parametrize(
    ("env", "changes", "field", "reason"),
    [
        # Step size belongs to its mode.
        ("prod", {f"{R}.canary_size_percent": None}, R, "canary_size_percent: required"),
        (
            "dev",
            {f"{R}.canary_size_percent": 25},
            R,
            "canary_size_percent: only meaningful with traffic_shifting 'CANARY'",
        ),
        (
            "prod",
            {f"{R}.traffic_shifting": "LINEAR", f"{R}.canary_size_percent": None},
            R,
            "linear_step_percent: required when traffic_shifting is LINEAR",
        ),
        # SageMaker's own ranges.
        (
            "prod",
            {f"{R}.canary_size_percent": 60},
            f"{R}.canary_size_percent",
            "less than or equal to 50",
        ),
        (
            "prod",
            {
                f"{R}.traffic_shifting": "LINEAR",
                f"{R}.canary_size_percent": None,
                f"{R}.linear_step_percent": 5,
            },
            f"{R}.linear_step_percent",
            "greater than or equal to 10",
        ),
        (
            "dev",
            {f"{R}.wait_interval_s": 3601},
            f"{R}.wait_interval_s",
            "less than or equal to 3600",
        ),
        (
            "dev",
            {f"{R}.termination_wait_s": -1},
            f"{R}.termination_wait_s",
            "greater than or equal to 0",
        ),
        (
            "dev",
            {f"{R}.max_execution_timeout_s": 599},
            f"{R}.max_execution_timeout_s",
            "greater than or equal to 600",
        ),
        (
            "prod",
            {f"{R}.max_execution_timeout_s": 28801},
            f"{R}.max_execution_timeout_s",
            "less than or equal to 28800",
        ),
        # Which alarms roll back.
        ("dev", {f"{R}.rollback_alarms": []}, f"{R}.rollback_alarms", "at least 1"),
        ("dev", {f"{R}.rollback_alarms": ["disk"]}, f"{R}.rollback_alarms", "invocation_5xx"),
        (
            "dev",
            {f"{R}.rollback_alarms": ["invocation_5xx", "invocation_5xx"]},
            R,
            "rollback_alarms: each alarm at most once",
        ),
        (
            "prod",
            {f"{R}.rollback_alarms": ["invocation_5xx", "instances_at_max"]},
            R,
            "instances_at_max measures capacity",
        ),
        # The deployment must outlast the green fleet's download and start-up.
        (
            "prod",
            {f"{R}.max_execution_timeout_s": 9000},
            "(root)",
            "operations.rollout.max_execution_timeout_s: 9000 s does not cover chat's download "
            "(3600 s) + start-up (3600 s) + 2 baking period(s) of 900 s + termination wait "
            "(900 s) = 9900 s",
        ),
        # Canary and linear shift shares of a fleet: one instance has none; a share is an instance.
        (
            "staging",
            {f"{R}.traffic_shifting": "CANARY", f"{R}.canary_size_percent": 50},
            "(root)",
            "CANARY needs at least 2 instances to shift a share of; "
            "chat.initial_instance_count is 1",
        ),
        (
            "prod",
            {f"{R}.canary_size_percent": 25},
            "(root)",
            "canary_size_percent: 25% of chat's 2 instances is less than one instance",
        ),
        # A baking period shorter than a rollback alarm's window can never roll back.
        (
            "dev",
            {f"{R}.wait_interval_s": 120},
            "(root)",
            "a 120 s baking period ends before rollback alarm invocation_5xx can go off (300 s)",
        ),
        (
            "prod",
            {f"{R}.wait_interval_s": 600},
            "(root)",
            "before rollback alarm gpu_memory can go off (900 s)",
        ),
        # Alarms reach someone.
        (
            "dev",
            {"operations.notifications.emails": []},
            "operations.notifications",
            "at least one subscriber",
        ),
        (
            "dev",
            {"operations.notifications.https_endpoints": ["http://hooks.example.com/x"]},
            "operations.notifications.https_endpoints.0",
            "pattern",
        ),
        (
            "dev",
            {"operations.notifications.emails": ["oncall"]},
            "operations.notifications.emails.0",
            "pattern",
        ),
        # Thresholds.
        (
            "prod",
            {f"{T}.gpu_memory_percent": 90},
            "(root)",
            "gpu_memory_percent: 90% would always be in alarm: chat's engine reserves 90% of GPU "
            "memory at start",
        ),
        ("dev", {f"{T}.gpu_sustained_minutes": 7}, f"{T}.gpu_sustained_minutes", "multiple of 5"),
        (
            "dev",
            {f"{T}.lambda_duration_share_of_timeout": 1.5},
            f"{T}.lambda_duration_share_of_timeout",
            "less than or equal to 1",
        ),
        (
            "dev",
            {f"{T}.api_latency_p99_ms": 1_000_000},
            f"{T}.api_latency_p99_ms",
            "less than or equal to 900000",
        ),
        ("dev", {f"{T}.ttft_p99_ms": None}, f"{T}.ttft_p99_ms", "Field required"),
        ("dev", {"operations": None}, "operations", "Field required"),
    ],
)
def test_operations_rule_refuses_naming_the_field(
    cdk_json_context: dict[str, Any], env: str, changes: dict[str, Any], field: str, reason: str
) -> None:
    message = _refused(cdk_json_context, env, changes)
    assert f"environment {env!r}: {field}" in message
    assert reason in message


def test_baking_periods_per_traffic_shifting_mode() -> None:
    common = {
        "wait_interval_s": 600,
        "termination_wait_s": 0,
        "max_execution_timeout_s": 3600,
        "rollback_alarms": ["invocation_5xx"],
    }
    assert RolloutConfig(traffic_shifting="ALL_AT_ONCE", **common).baking_periods == 1
    canary = RolloutConfig(traffic_shifting="CANARY", canary_size_percent=10, **common)
    assert canary.baking_periods == 2
    linear = RolloutConfig(traffic_shifting="LINEAR", linear_step_percent=30, **common)
    assert linear.baking_periods == 4  # 30, 60, 90, 100


def test_linear_roll_out_on_prod_fits_with_enough_time(cdk_json_context: dict[str, Any]) -> None:
    changes = {
        f"{R}.traffic_shifting": "LINEAR",
        f"{R}.canary_size_percent": None,
        f"{R}.linear_step_percent": 50,
    }
    rollout = load_environment(_with(cdk_json_context, "prod", changes), "prod").operations.rollout
    assert (rollout.traffic_shifting, rollout.baking_periods) == ("LINEAR", 2)
