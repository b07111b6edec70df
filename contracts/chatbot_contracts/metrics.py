"""Front-door metric namespace, names, units and dimensions: emitted by lambda, read by stacks."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "METRICS_NAMESPACE",
    "SERVICE_DIMENSION",
    "SERVICE_NAME",
    "Metric",
    "dimensions",
]

METRICS_NAMESPACE = "Chatbot"
"""CloudWatch namespace of the front door's EMF metrics (``POWERTOOLS_METRICS_NAMESPACE``)."""

SERVICE_NAME = "chatbot-front-door"
"""Powertools service name (``POWERTOOLS_SERVICE_NAME``); also the ``service`` dimension."""

SERVICE_DIMENSION = "service"
"""The one dimension Powertools adds to every metric it flushes."""


class Metric(StrEnum):
    """Every metric the front door emits, with its CloudWatch unit as :attr:`unit`."""

    ERRORS = "Errors"
    MODERATION_CHECKS = "ModerationChecks"
    INPUT_MODERATION_BLOCKED = "InputModerationBlocked"
    OUTPUT_MODERATION_BLOCKED = "OutputModerationBlocked"
    MODERATION_FAILED_CLOSED = "ModerationFailedClosed"
    CONTENT_FILTER_ENDINGS = "ContentFilterEndings"
    SESSIONS_CREATED = "SessionsCreated"
    SESSION_DELETE_INCOMPLETE = "SessionDeleteIncomplete"
    TOKENS_OUT = "TokensOut"
    TIME_TO_FIRST_TOKEN = "TimeToFirstToken"  # noqa: S105 - a metric name, not a secret
    # A request refused with 503 model_waking_up: an inference component had no copy.
    MODEL_WAKING_UP = "ModelWakingUp"

    @property
    def unit(self) -> str:
        """The CloudWatch unit name the metric is emitted with."""
        return "Milliseconds" if self is Metric.TIME_TO_FIRST_TOKEN else "Count"


def dimensions(service: str = SERVICE_NAME) -> dict[str, str]:
    """The dimensions every front-door metric carries.

    Parameters
    ----------
    service
        The Powertools service name.

    Returns
    -------
    dict[str, str]
        Dimension name to value, as CloudWatch alarms and widgets must name them.
    """
    return {SERVICE_DIMENSION: service}
