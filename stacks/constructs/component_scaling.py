"""L3 construct: copy-count autoscaling of an inference component, down to zero and back."""

from __future__ import annotations

from aws_cdk import Duration, TimeZone
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.config import ComponentSettings, ScaleToZeroSettings
from stacks.constructs import durations, pseudo
from stacks.constructs.inference_component import InferenceComponentEndpoint

__all__ = ["COPY_COUNT_DIMENSION", "NO_CAPACITY_METRIC", "ComponentScaling"]

COPY_COUNT_DIMENSION = "sagemaker:inference-component:DesiredCopyCount"
NO_CAPACITY_METRIC = "NoCapacityInvocationFailures"
# SageMaker publishes NoCapacityInvocationFailures at this resolution; one period is enough.


class ComponentScaling(Construct):
    """Scalable target, target tracking and (where allowed) scale to zero of one component.

    - Target tracking on ``SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution``
      between the role's minimum and maximum copies.
    - Where copies may reach zero: a step policy that sets the copy count to the minimum
      (0) once no invocation arrived for ``idle_minutes`` (target tracking's own scale-in is
      then disabled, so the idle time is what decides), and the scale-from-zero step policy:
      one copy more as soon as ``NoCapacityInvocationFailures`` counts one failed request
      (``GreaterThanOrEqualToThreshold`` 1; with ``GreaterThanThreshold`` one request would
      never wake it).
    - With ``off_hours``: scheduled actions lower the minimum to 0 at ``sleep_cron`` and
      restore it at ``wake_cron``.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    target:
        The component endpoint.
    copies:
        The role's copy settings.
    scale_to_zero:
        The environment's scale-to-zero settings, or ``None`` (never zero).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        target: InferenceComponentEndpoint,
        copies: ComponentSettings,
        scale_to_zero: ScaleToZeroSettings | None,
    ) -> None:
        super().__init__(scope, construct_id)
        name = target.endpoint_name
        self.can_reach_zero = scale_to_zero is not None and (
            copies.min_copies == 0 or scale_to_zero.off_hours is not None
        )
        self.scalable_target = appscaling.ScalableTarget(
            self,
            "ScalableTarget",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"inference-component/{name}",
            scalable_dimension=COPY_COUNT_DIMENSION,
            min_capacity=copies.min_copies,
            max_capacity=copies.max_copies,
            # The service-linked role of SageMaker scaling (see LlmEndpoint): without RoleARN
            # the service uses, and if needed creates, it.
            role=iam.Role.from_role_arn(
                self,
                "AutoScalingServiceLinkedRole",
                f"arn:{pseudo.partition()}:iam::{pseudo.account_id()}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            ),
        )
        cfn_target = self.scalable_target.node.default_child
        assert isinstance(cfn_target, appscaling.CfnScalableTarget)
        cfn_target.add_property_deletion_override("RoleARN")
        self.scalable_target.node.add_dependency(target.cfn_component)

        self.scalable_target.scale_to_track_metric(
            "ConcurrencyTracking",
            target_value=copies.target_concurrent_requests_per_copy,
            predefined_metric=(
                appscaling.PredefinedMetric.SAGEMAKER_INFERENCE_COMPONENT_CONCURRENT_REQUESTS_PER_COPY_HIGH_RESOLUTION
            ),
            scale_in_cooldown=Duration.seconds(copies.scale_in_cooldown_s),
            scale_out_cooldown=Duration.seconds(copies.scale_out_cooldown_s),
            disable_scale_in=self.can_reach_zero,
        )
        self.wake_alarm: cloudwatch.Alarm | None = None
        self.idle_alarm: cloudwatch.Alarm | None = None
        if scale_to_zero is not None and self.can_reach_zero:
            self.idle_alarm = self._scale_in_when_idle(target, scale_to_zero.idle_minutes)
            self.wake_alarm = self._scale_out_from_zero(target)
            if scale_to_zero.off_hours is not None:
                schedule = scale_to_zero.off_hours
                zone = TimeZone.of(schedule.timezone)
                self.scalable_target.scale_on_schedule(
                    "SleepOffHours",
                    schedule=appscaling.Schedule.expression(schedule.sleep_cron),
                    min_capacity=0,
                    time_zone=zone,
                )
                self.scalable_target.scale_on_schedule(
                    "WakeForWorkingHours",
                    schedule=appscaling.Schedule.expression(schedule.wake_cron),
                    min_capacity=copies.min_copies,
                    time_zone=zone,
                )

    def _scale_in_when_idle(
        self, target: InferenceComponentEndpoint, idle_minutes: int
    ) -> cloudwatch.Alarm:
        action = appscaling.StepScalingAction(
            self,
            "ScaleInWhenIdle",
            scaling_target=self.scalable_target,
            adjustment_type=appscaling.AdjustmentType.EXACT_CAPACITY,
            cooldown=durations.minutes(1),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        # Application Auto Scaling clamps 0 to the current minimum (1 by day off hours-only).
        action.add_adjustment(adjustment=0, upper_bound=0)
        period = durations.minutes(idle_minutes)
        # A refused request counts as activity: the wake-up must not be undone while it runs.
        activity = cloudwatch.MathExpression(
            expression="FILL(invocations, 0) + FILL(refused, 0)",
            using_metrics={
                "invocations": target.metric("Invocations", statistic="Sum", period=period),
                "refused": target.metric(NO_CAPACITY_METRIC, statistic="Sum", period=period),
            },
            period=period,
            label=f"{target.endpoint_name} invocations and refused requests",
        )
        alarm = cloudwatch.Alarm(
            self,
            "IdleAlarm",
            alarm_description=(
                f"{target.endpoint_name}: no invocation for {idle_minutes} minutes; scale the "
                "copies in to the minimum"
            ),
            metric=activity,
            threshold=0,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_OR_EQUAL_TO_THRESHOLD,
            # No datapoint at all is idleness too.
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(action))
        return alarm

    def _scale_out_from_zero(self, target: InferenceComponentEndpoint) -> cloudwatch.Alarm:
        action = appscaling.StepScalingAction(
            self,
            "ScaleOutFromZero",
            scaling_target=self.scalable_target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            cooldown=durations.minutes(1),
            metric_aggregation_type=appscaling.MetricAggregationType.MAXIMUM,
        )
        action.add_adjustment(adjustment=1, lower_bound=0)
        alarm = cloudwatch.Alarm(
            self,
            "WakeAlarm",
            alarm_description=(
                f"{target.endpoint_name}: a request found no copy; add one (scale out from zero)"
            ),
            metric=target.metric(
                NO_CAPACITY_METRIC, statistic="Maximum", period=durations.seconds(30)
            ),
            threshold=1,
            evaluation_periods=1,
            datapoints_to_alarm=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.MISSING,
        )
        alarm.add_alarm_action(cloudwatch_actions.ApplicationScalingAction(action))
        return alarm
