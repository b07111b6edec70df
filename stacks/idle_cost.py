"""What an idle environment costs per day, before and after scale to zero, at pinned prices."""

from __future__ import annotations

import re
from dataclasses import dataclass

from stacks.config import EndpointSettings, EnvironmentConfig, OffHoursSchedule

__all__ = [
    "ON_DEMAND_USD_PER_HOUR",
    "PRICES_AS_OF",
    "PRICES_REGION",
    "IdleCost",
    "idle_cost",
    "markdown_table",
]

PRICES_AS_OF = "2026-03"
PRICES_REGION = "us-east-1"
# SageMaker real-time inference, on demand, per instance-hour, as published on the SageMaker
# pricing page (and quoted by third-party price listings) in PRICES_AS_OF; not checked
# against the AWS Price List API here. Pinned on purpose: a synth never calls AWS.
ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.12xlarge": 7.09,
}
_WEEKDAYS = {"MON-FRI": 5, "*": 7, "?": 7}
_SIMPLE_CRON = re.compile(r"^cron\((\d+) (\d+) \? \* (MON-FRI|\*) \*\)$")


@dataclass(frozen=True)
class IdleCost:
    """An environment's idle cost per day in USD.

    Attributes
    ----------
    env:
        Environment name.
    before_usd_per_day:
        Plain endpoints holding their instances around the clock (the state before scale to
        zero; for environments on plain endpoints, also after).
    after_usd_per_day:
        Idle day with this configuration: 0 where the models sleep whenever idle (plus up to
        ``idle_minutes`` after the last request), the working-hours minimum averaged over the
        week where they sleep off hours only.
    can_reach_zero:
        Whether any model of the environment ever scales to zero.
    """

    env: str
    before_usd_per_day: float
    after_usd_per_day: float
    can_reach_zero: bool


def _price(settings: EndpointSettings) -> float:
    try:
        return ON_DEMAND_USD_PER_HOUR[settings.instance_type]
    except KeyError:
        raise KeyError(
            f"no pinned price for {settings.instance_type}; add it to ON_DEMAND_USD_PER_HOUR"
        ) from None


def _always_on_instances(settings: EndpointSettings) -> int:
    if settings.scaling is not None:
        return settings.scaling.min_instances
    if settings.component is not None:
        return max(1, settings.instances_for(settings.component.min_copies))
    return settings.initial_instance_count


def awake_hours_per_day(schedule: OffHoursSchedule) -> float:
    """Average hours per day between ``wake_cron`` and ``sleep_cron``, over a week.

    Parameters
    ----------
    schedule:
        A schedule of the simple shape ``cron(M H ? * MON-FRI|* *)`` (both expressions).

    Returns
    -------
    float
        Hours awake per day, averaged over seven days.
    """
    wake, sleep = _SIMPLE_CRON.match(schedule.wake_cron), _SIMPLE_CRON.match(schedule.sleep_cron)
    if wake is None or sleep is None or wake.group(3) != sleep.group(3):
        raise ValueError(
            f"off_hours: only cron(M H ? * MON-FRI|* *) pairs are costed, got "
            f"{schedule.wake_cron!r} and {schedule.sleep_cron!r}"
        )
    start = int(wake.group(2)) + int(wake.group(1)) / 60
    end = int(sleep.group(2)) + int(sleep.group(1)) / 60
    return (end - start) % 24 * _WEEKDAYS[wake.group(3)] / 7


def idle_cost(config: EnvironmentConfig) -> IdleCost:
    """The idle cost per day of one environment.

    Parameters
    ----------
    config:
        The environment's validated settings.

    Returns
    -------
    IdleCost
        Before and after scale to zero.
    """
    roles = (config.chat, config.moderation)
    before = sum(_always_on_instances(r) * _price(r) * 24 for r in roles)
    zero = config.hosting.scale_to_zero if config.hosting.uses_components else None
    if zero is None:
        return IdleCost(config.name, before, before, can_reach_zero=False)
    after = 0.0
    for role in roles:
        assert role.component is not None  # validated with the hosting mode
        if zero.off_hours is not None:
            hours = awake_hours_per_day(zero.off_hours)
            after += _always_on_instances(role) * _price(role) * hours
        elif role.component.min_copies > 0:
            after += _always_on_instances(role) * _price(role) * 24
    return IdleCost(config.name, before, after, can_reach_zero=True)


def markdown_table(configs: list[EnvironmentConfig]) -> str:
    """The cost table of docs/infra.md, one row per environment.

    Parameters
    ----------
    configs:
        The environments, in table order.

    Returns
    -------
    str
        A Markdown table.
    """
    lines = [
        "| Environment | Hosting | Instances (price per hour) | Idle cost per day, before "
        "| Idle cost per day, after | Scales to zero |",
        "|---|---|---|---:|---:|---|",
    ]
    for config in configs:
        cost = idle_cost(config)
        instances = ", ".join(
            f"{role}: {settings.instance_type} (${_price(settings):.3f})"
            for role, settings in (("chat", config.chat), ("moderation", config.moderation))
        )
        zero = config.hosting.scale_to_zero
        when = "never"
        if zero is not None:
            when = (
                f"off hours ({zero.off_hours.sleep_cron} to {zero.off_hours.wake_cron}, "
                f"{zero.off_hours.timezone}), after {zero.idle_minutes} idle minutes"
                if zero.off_hours is not None
                else f"after {zero.idle_minutes} idle minutes"
            )
        lines.append(
            f"| {config.name} | {config.hosting.mode} | {instances} | "
            f"${cost.before_usd_per_day:,.2f} | ${cost.after_usd_per_day:,.2f} | {when} |"
        )
    return "\n".join(lines)
