"""Alarms on the front door, its API, the session table and its own metrics, plus one composite."""

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
from stacks.constructs.alarm_topic import AlarmTopic
from stacks.constructs.front_door_metrics import api_stage_metric, front_door_metric
from stacks.constructs.hosted_model import HostedModel

__all__ = ["SESSION_TABLE_OPERATIONS", "ServiceAlarms"]

_AT_LEAST = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
_ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# The operations the front door performs on the session table (SystemErrors is per operation).
SESSION_TABLE_OPERATIONS = (
    dynamodb.Operation.GET_ITEM,
    dynamodb.Operation.PUT_ITEM,
    dynamodb.Operation.UPDATE_ITEM,
    dynamodb.Operation.DELETE_ITEM,
    dynamodb.Operation.QUERY,
    dynamodb.Operation.BATCH_WRITE_ITEM,
    dynamodb.Operation.TRANSACT_WRITE_ITEMS,
)
# Endpoint alarms that mean users are failing now; capacity alarms only warn.
_UNHEALTHY_ENDPOINT_ALARMS = ("invocation_5xx", "model_latency_p90")


class ServiceAlarms(Construct):
    """Every alarm outside the endpoints, and ``chatbot-<env>-unhealthy`` over the worst of all.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name; alarms are named ``chatbot-<env>-<what>``.
    thresholds:
        The environment's alarm thresholds.
    function:
        The front-door function.
    function_timeout:
        Its timeout; the duration alarm fires at ``lambda_duration_share_of_timeout`` of it.
    api_name, stage_name:
        The REST API's name and stage.
    table:
        The session table.
    endpoints:
        The SageMaker endpoints, whose failure alarms join the composite alarm.
    alarm_topic:
        Where every alarm sends its ALARM and OK transitions.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        thresholds: ThresholdsConfig,
        function: lambda_.IFunction,
        function_timeout: Duration,
        api_name: str,
        stage_name: str,
        table: dynamodb.ITable,
        endpoints: Sequence[HostedModel],
        alarm_topic: AlarmTopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self._prefix = f"chatbot-{env_name}"
        t = thresholds
        duration_limit_ms = t.lambda_duration_share_of_timeout * function_timeout.to_milliseconds()
        self.lambda_errors = self._alarm(
            "front-door-errors",
            "front-door Lambda invocations failed",
            function.metric_errors(statistic="Sum", period=durations.minutes(5)),
            t.lambda_errors_per_5min,
        )
        self.lambda_throttles = self._alarm(
            "front-door-throttles",
            "front-door Lambda throttled (reserved concurrency reached)",
            function.metric_throttles(statistic="Sum", period=durations.minutes(5)),
            t.lambda_throttles_per_5min,
        )
        self.lambda_duration = self._alarm(
            "front-door-duration",
            f"a front-door invocation ran past {t.lambda_duration_share_of_timeout:.0%} of its "
            "timeout",
            function.metric_duration(statistic="Maximum", period=durations.minutes(5)),
            duration_limit_ms,
            comparison=_ABOVE,
        )
        self.api_5xx = self._alarm(
            "api-5xx",
            "API Gateway returned 5xx",
            api_stage_metric(api_name, stage_name, "5XXError", statistic="Sum"),
            t.api_5xx_per_5min,
        )
        self.api_latency = self._alarm(
            "api-latency-p99",
            "API Gateway p99 latency above threshold (a streamed answer counts whole)",
            api_stage_metric(api_name, stage_name, "Latency", statistic="p99"),
            t.api_latency_p99_ms,
            comparison=_ABOVE,
            evaluation_periods=3,
            datapoints_to_alarm=2,
        )
        throttles = cloudwatch.MathExpression(
            expression="reads + writes",
            using_metrics={
                "reads": table.metric(
                    "ReadThrottleEvents", statistic="Sum", period=durations.minutes(5)
                ),
                "writes": table.metric(
                    "WriteThrottleEvents", statistic="Sum", period=durations.minutes(5)
                ),
            },
            label="Throttle events",
            period=durations.minutes(5),
        )
        self.table_throttles = self._alarm(
            "sessions-throttles",
            "session table throttled requests",
            throttles,
            t.dynamodb_throttles_per_5min,
        )
        system_errors = table.metric_system_errors_for_operations(
            operations=list(SESSION_TABLE_OPERATIONS), period=durations.minutes(5)
        )
        self.table_system_errors = self._alarm(
            "sessions-system-errors",
            "session table returned DynamoDB system errors (HTTP 500)",
            system_errors,
            t.dynamodb_system_errors_per_5min,
        )
        self.ttft = self._alarm(
            "ttft-p99",
            "p99 time to first token above threshold",
            front_door_metric(Metric.TIME_TO_FIRST_TOKEN, statistic="p99"),
            t.ttft_p99_ms,
            comparison=_ABOVE,
            evaluation_periods=3,
            datapoints_to_alarm=2,
        )
        self.moderation_failed_closed = self._alarm(
            "moderation-failed-closed",
            "turns refused because moderation was unavailable (fail closed)",
            front_door_metric(Metric.MODERATION_FAILED_CLOSED, statistic="Sum"),
            t.moderation_failed_closed_per_5min,
        )
        self.content_filter_spike = self._alarm(
            "content-filter-spike",
            "spike of answers ended by the content filter",
            front_door_metric(Metric.CONTENT_FILTER_ENDINGS, statistic="Sum"),
            t.content_filter_endings_per_5min,
        )
        self.alarms: list[cloudwatch.AlarmBase] = [
            self.lambda_errors,
            self.lambda_throttles,
            self.lambda_duration,
            self.api_5xx,
            self.api_latency,
            self.table_throttles,
            self.table_system_errors,
            self.ttft,
            self.moderation_failed_closed,
            self.content_filter_spike,
        ]
        # By name: referencing the endpoint alarms would export their ARNs from that stack.
        self.endpoint_alarms: dict[str, cloudwatch.IAlarm] = {}
        page_worthy: list[cloudwatch.IAlarm] = [
            self.lambda_errors,
            self.api_5xx,
            self.table_system_errors,
            self.ttft,
            self.moderation_failed_closed,
        ]
        for endpoint in endpoints:
            for kind, name in endpoint.alarm_names.items():
                imported = cloudwatch.Alarm.from_alarm_name(self, name, name)
                self.endpoint_alarms[name] = imported
                if kind in _UNHEALTHY_ENDPOINT_ALARMS:
                    page_worthy.append(imported)
        self.unhealthy = cloudwatch.CompositeAlarm(
            self,
            "Unhealthy",
            composite_alarm_name=f"{self._prefix}-unhealthy",
            alarm_description=f"{self._prefix} is failing its users: front-door or API errors, "
            "slow first tokens, moderation failing closed, session-table system errors, or "
            "endpoint 5xx or latency (the rule lists the alarms)",
            alarm_rule=cloudwatch.AlarmRule.any_of(
                *(
                    cloudwatch.AlarmRule.from_alarm(alarm, cloudwatch.AlarmState.ALARM)
                    for alarm in page_worthy
                )
            ),
        )
        self.alarms.append(self.unhealthy)
        for alarm in self.alarms:
            alarm_topic.notify(alarm)

    def _alarm(
        self,
        name: str,
        description: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        *,
        comparison: cloudwatch.ComparisonOperator = _AT_LEAST,
        evaluation_periods: int = 1,
        datapoints_to_alarm: int | None = None,
    ) -> cloudwatch.Alarm:
        return cloudwatch.Alarm(
            self,
            "".join(part.capitalize() for part in name.split("-")) + "Alarm",
            alarm_name=f"{self._prefix}-{name}",
            alarm_description=f"{self._prefix}: {description}",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
