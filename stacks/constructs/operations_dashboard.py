"""The environment's CloudWatch dashboard ``chatbot-<env>``, one row per question an operator asks.

Plain ``aws_cloudwatch`` widgets rather than cdk-monitoring-constructs: docs/infra.md ("Operating
it") gives the synth-time figures behind that choice.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from chatbot_contracts.metrics import Metric
from stacks.config import ThresholdsConfig
from stacks.constructs import durations
from stacks.constructs.front_door_metrics import api_stage_metric, front_door_metric
from stacks.constructs.hosted_model import HostedModel
from stacks.constructs.service_alarms import SESSION_TABLE_OPERATIONS

__all__ = ["OperationsDashboard"]

_WIDTH = 6
_HEIGHT = 6


def _graph(
    title: str,
    left: Sequence[cloudwatch.IMetric],
    *,
    right: Sequence[cloudwatch.IMetric] = (),
    annotations: Sequence[cloudwatch.HorizontalAnnotation] = (),
    width: int = _WIDTH,
) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title,
        left=list(left),
        right=list(right),
        left_annotations=list(annotations),
        width=width,
        height=_HEIGHT,
    )


class OperationsDashboard(Construct):
    """One dashboard: traffic, safety, the front door, each endpoint, the table, alarm status.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name; the dashboard is ``chatbot-<env>``.
    thresholds:
        Alarm thresholds, drawn as lines on the graphs they apply to.
    function:
        The front-door function.
    reserved_concurrency:
        Its reserved concurrency, drawn against its concurrent executions.
    api_name, stage_name:
        The REST API's name and stage.
    table:
        The session table.
    endpoints:
        The SageMaker endpoints, one row each.
    alarms:
        Every alarm of the environment, for the status row.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        thresholds: ThresholdsConfig,
        function: lambda_.IFunction,
        reserved_concurrency: int,
        api_name: str,
        stage_name: str,
        table: dynamodb.ITable,
        endpoints: Sequence[HostedModel],
        alarms: Sequence[cloudwatch.IAlarm],
    ) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"chatbot-{env_name}",
            default_interval=Duration.hours(3),
        )
        self.dashboard.add_widgets(*self._traffic_row(api_name, stage_name, function, thresholds))
        self.dashboard.add_widgets(*self._safety_row(function, reserved_concurrency))
        for endpoint in endpoints:
            self.dashboard.add_widgets(*self._endpoint_row(endpoint, thresholds))
        self.dashboard.add_widgets(*self._table_row(table))
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(
                title="Alarm status", alarms=list(alarms), width=24, height=_HEIGHT
            )
        )

    @staticmethod
    def _traffic_row(
        api_name: str, stage_name: str, function: lambda_.IFunction, thresholds: ThresholdsConfig
    ) -> list[cloudwatch.IWidget]:
        def api(metric_name: str, label: str) -> cloudwatch.Metric:
            return api_stage_metric(api_name, stage_name, metric_name, statistic="Sum", label=label)

        tokens = front_door_metric(Metric.TOKENS_OUT, statistic="Sum")
        return [
            _graph(
                "Requests",
                [api("Count", "API requests")],
            ),
            _graph(
                "Errors by status",
                [
                    api("4XXError", "API 4xx"),
                    api("5XXError", "API 5xx"),
                    function.metric_errors(
                        statistic="Sum", period=durations.minutes(5), label="Lambda errors"
                    ),
                    front_door_metric(Metric.ERRORS, statistic="Sum", label="Failed turns"),
                ],
            ),
            _graph(
                "Time to first token (ms)",
                [
                    front_door_metric(Metric.TIME_TO_FIRST_TOKEN, statistic="p50", label="p50"),
                    front_door_metric(Metric.TIME_TO_FIRST_TOKEN, statistic="p99", label="p99"),
                ],
                annotations=[
                    cloudwatch.HorizontalAnnotation(value=thresholds.ttft_p99_ms, label="p99 alarm")
                ],
            ),
            _graph(
                "Tokens out per second",
                [
                    cloudwatch.MathExpression(
                        expression="tokens / PERIOD(tokens)",
                        using_metrics={"tokens": tokens},
                        label="tokens/s",
                        period=durations.minutes(5),
                    )
                ],
            ),
        ]

    @staticmethod
    def _safety_row(
        function: lambda_.IFunction, reserved_concurrency: int
    ) -> list[cloudwatch.IWidget]:
        return [
            _graph(
                "Moderation blocks",
                [
                    front_door_metric(Metric.INPUT_MODERATION_BLOCKED, statistic="Sum"),
                    front_door_metric(Metric.OUTPUT_MODERATION_BLOCKED, statistic="Sum"),
                    front_door_metric(Metric.MODERATION_FAILED_CLOSED, statistic="Sum"),
                ],
                right=[front_door_metric(Metric.MODERATION_CHECKS, statistic="Sum")],
            ),
            _graph(
                "Sessions created, content-filter endings",
                [
                    front_door_metric(Metric.SESSIONS_CREATED, statistic="Sum"),
                    front_door_metric(Metric.CONTENT_FILTER_ENDINGS, statistic="Sum"),
                ],
                # A model scaled to zero answering 503 while it wakes; session deletes that
                # left messages behind for the TTL to remove.
                right=[
                    front_door_metric(Metric.MODEL_WAKING_UP, statistic="Sum"),
                    front_door_metric(Metric.SESSION_DELETE_INCOMPLETE, statistic="Sum"),
                ],
            ),
            _graph(
                "Lambda concurrency vs reserved",
                [
                    function.metric(
                        "ConcurrentExecutions",
                        statistic="Maximum",
                        period=durations.minutes(1),
                        label="concurrent executions",
                    )
                ],
                right=[function.metric_throttles(statistic="Sum", period=durations.minutes(5))],
                annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=reserved_concurrency, label="reserved concurrency"
                    )
                ],
            ),
            _graph(
                "Lambda duration (ms)",
                [
                    function.metric_duration(
                        statistic="p50", period=durations.minutes(5), label="p50"
                    ),
                    function.metric_duration(
                        statistic="p99", period=durations.minutes(5), label="p99"
                    ),
                    function.metric_duration(
                        statistic="Maximum", period=durations.minutes(5), label="max"
                    ),
                ],
            ),
        ]

    @staticmethod
    def _endpoint_row(
        endpoint: HostedModel, thresholds: ThresholdsConfig
    ) -> list[cloudwatch.IWidget]:
        name = endpoint.endpoint_name
        gpus = endpoint.settings.instance.gpu_count
        scaling = endpoint.settings.scaling
        limits = (
            [cloudwatch.HorizontalAnnotation(value=scaling.max_instances, label="scaling max")]
            if scaling is not None
            else []
        )
        return [
            _graph(
                f"{name}: invocations",
                [
                    endpoint.metric("Invocations", statistic="Sum"),
                    endpoint.metric("Invocation4XXErrors", statistic="Sum"),
                    endpoint.metric("Invocation5XXErrors", statistic="Sum"),
                ],
            ),
            _graph(
                f"{name}: model and overhead latency (us)",
                [
                    endpoint.metric("ModelLatency", statistic="p50"),
                    endpoint.metric("ModelLatency", statistic="p90"),
                    endpoint.metric("OverheadLatency", statistic="p90"),
                ],
            ),
            _graph(
                f"{name}: GPU utilization and memory (% x {gpus} GPU)",
                [
                    endpoint.instance_metric("GPUUtilization"),
                    endpoint.instance_metric("GPUMemoryUtilization"),
                ],
                annotations=[
                    cloudwatch.HorizontalAnnotation(
                        value=thresholds.gpu_memory_percent * gpus, label="memory alarm"
                    )
                ],
            ),
            _graph(f"{name}: instances", [endpoint.metric_instance_count()], annotations=limits),
        ]

    @staticmethod
    def _table_row(table: dynamodb.ITable) -> list[cloudwatch.IWidget]:
        return [
            _graph(
                "Sessions table: consumed capacity",
                [
                    table.metric_consumed_read_capacity_units(
                        statistic="Sum", period=durations.minutes(5)
                    ),
                    table.metric_consumed_write_capacity_units(
                        statistic="Sum", period=durations.minutes(5)
                    ),
                ],
                width=12,
            ),
            _graph(
                "Sessions table: throttles and system errors",
                [
                    table.metric(
                        "ReadThrottleEvents", statistic="Sum", period=durations.minutes(5)
                    ),
                    table.metric(
                        "WriteThrottleEvents", statistic="Sum", period=durations.minutes(5)
                    ),
                ],
                right=[
                    table.metric_system_errors_for_operations(
                        operations=list(SESSION_TABLE_OPERATIONS), period=durations.minutes(5)
                    )
                ],
                width=12,
            ),
        ]
