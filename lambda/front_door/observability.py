"""Powertools structured logging (request and session ids) and per-request EMF metrics."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

from chatbot_contracts.metrics import METRICS_NAMESPACE, SERVICE_NAME

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger


@cache
def get_logger() -> Logger:
    """The process's JSON logger (created on first use, keeping cold start light)."""
    from aws_lambda_powertools import Logger

    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME))


def bind_log_context(**keys: str | None) -> None:
    """Attach keys (``request_id``, ``session_id``) to every log line of this request.

    Powertools keeps these in a ContextVar, so concurrent requests do not mix them up.

    Parameters
    ----------
    **keys
        Keys to add; ``None`` values are skipped.
    """
    present = {name: value for name, value in keys.items() if value is not None}
    if present:
        get_logger().thread_safe_append_keys(**present)


class RequestMetrics:
    """Metrics of one request, flushed as one EMF document when the request ends.

    Powertools' ``EphemeralMetrics`` holds no process-wide state, so concurrent requests in
    one process (locally, or under uvicorn) never flush each other's values.
    """

    def __init__(self) -> None:
        self._values: list[tuple[str, str, float]] = []

    def add(self, name: str, unit: str, value: float) -> None:
        """Record a value.

        Parameters
        ----------
        name
            Metric name, e.g. ``TimeToFirstToken``.
        unit
            A CloudWatch unit name (``Milliseconds``, ``Count``).
        value
            The value.
        """
        self._values.append((name, unit, value))

    @property
    def names(self) -> list[str]:
        """Names recorded so far."""
        return [name for name, _, _ in self._values]

    def flush(self) -> None:
        """Emit the recorded values (to stdout, where Lambda ships them to CloudWatch)."""
        if not self._values or os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            return
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        metrics = EphemeralMetrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE),
            service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME),
        )
        for name, unit, value in self._values:
            metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
        metrics.flush_metrics()
        self._values.clear()
