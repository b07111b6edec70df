"""CDK durations, made in the jsii runtime on first use and then reused.

Each ``Duration.minutes(5)`` is a round trip to the jsii node process; the alarms, metrics and
widgets of an environment ask for the same few periods over a hundred times. Functions, not
module constants: nothing may call jsii while modules are imported, because a synth's first
call waits for node to finish loading the assemblies (stacks.jsii_loads).
"""

from __future__ import annotations

from functools import cache

from aws_cdk import Duration

__all__ = ["minutes", "seconds"]


@cache
def minutes(amount: int) -> Duration:
    """``Duration.minutes(amount)``, one object per amount."""
    return Duration.minutes(amount)


@cache
def seconds(amount: int) -> Duration:
    """``Duration.seconds(amount)``, one object per amount."""
    return Duration.seconds(amount)
