"""Idle cost per environment: from the pinned price table, and the same in docs/infra.md."""

from __future__ import annotations

from typing import Any

import pytest

from scripts.idle_cost_table import table
from stacks.config import load_environment
from stacks.idle_cost import ON_DEMAND_USD_PER_HOUR, awake_hours_per_day, idle_cost
from tests.infra.conftest import REPO_ROOT

G5_2XL, G5_12XL = ON_DEMAND_USD_PER_HOUR["ml.g5.2xlarge"], ON_DEMAND_USD_PER_HOUR["ml.g5.12xlarge"]


def test_dev_costs_nothing_when_idle(cdk_json_context: dict[str, Any]) -> None:
    cost = idle_cost(load_environment(cdk_json_context, "dev"))
    assert cost.before_usd_per_day == pytest.approx(2 * G5_2XL * 24)
    assert cost.after_usd_per_day == 0
    assert cost.can_reach_zero


def test_staging_pays_working_hours_only(cdk_json_context: dict[str, Any]) -> None:
    staging = load_environment(cdk_json_context, "staging")
    assert staging.hosting.scale_to_zero is not None
    assert staging.hosting.scale_to_zero.off_hours is not None
    # 07:00 to 19:00 on five days of seven.
    assert awake_hours_per_day(staging.hosting.scale_to_zero.off_hours) == pytest.approx(60 / 7)
    cost = idle_cost(staging)
    assert cost.before_usd_per_day == pytest.approx((G5_12XL + G5_2XL) * 24)
    assert cost.after_usd_per_day == pytest.approx((G5_12XL + G5_2XL) * 60 / 7)


def test_prod_is_never_zero(cdk_json_context: dict[str, Any]) -> None:
    cost = idle_cost(load_environment(cdk_json_context, "prod"))
    assert (
        cost.before_usd_per_day
        == cost.after_usd_per_day
        == pytest.approx(2 * (G5_12XL + G5_2XL) * 24)
    )
    assert not cost.can_reach_zero


def test_docs_carry_the_current_table() -> None:
    """Regenerate with ``python scripts/idle_cost_table.py`` after changing cdk.json."""
    assert table() in (REPO_ROOT / "docs" / "infra.md").read_text()
