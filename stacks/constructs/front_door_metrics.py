"""CloudWatch handles on the front door's metrics: its own EMF metrics (named only through the
contracts) and its API stage's."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch

from chatbot_contracts.metrics import METRICS_NAMESPACE, Metric, dimensions
from stacks.constructs import durations

__all__ = ["api_stage_metric", "front_door_metric"]


def front_door_metric(
    metric: Metric,
    *,
    statistic: str,
    period: Duration | None = None,
    label: str | None = None,
) -> cloudwatch.Metric:
    """A metric the front door emits, with exactly the namespace and dimensions it emits with.

    Parameters
    ----------
    metric:
        The metric, from the contracts' :class:`~chatbot_contracts.metrics.Metric`.
    statistic:
        E.g. ``Sum``, ``p99``.
    period:
        Aggregation period; default five minutes.
    label:
        Legend label on dashboards; default the metric name.

    Returns
    -------
    cloudwatch.Metric
        The metric in ``METRICS_NAMESPACE`` with the Powertools ``service`` dimension.
    """
    return cloudwatch.Metric(
        namespace=METRICS_NAMESPACE,
        metric_name=metric.value,
        dimensions_map=dimensions(),
        statistic=statistic,
        period=period or durations.minutes(5),
        label=label,
    )


def api_stage_metric(
    api_name: str,
    stage_name: str,
    metric_name: str,
    *,
    statistic: str,
    label: str | None = None,
) -> cloudwatch.Metric:
    """An ``AWS/ApiGateway`` metric of one REST API stage, by literal names.

    Literal names keep another stack from importing the stage's ``Ref`` (an export would pin
    the stage).

    Parameters
    ----------
    api_name, stage_name:
        The REST API's name and stage name.
    metric_name:
        E.g. ``Count``, ``5XXError``, ``Latency``.
    statistic:
        E.g. ``Sum``, ``p99``.
    label:
        Legend label on dashboards.

    Returns
    -------
    cloudwatch.Metric
        The five-minute metric with ``ApiName`` and ``Stage`` dimensions.
    """
    return cloudwatch.Metric(
        namespace="AWS/ApiGateway",
        metric_name=metric_name,
        dimensions_map={"ApiName": api_name, "Stage": stage_name},
        statistic=statistic,
        period=durations.minutes(5),
        label=label,
    )
