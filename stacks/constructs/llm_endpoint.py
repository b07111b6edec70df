"""L3 construct: one SageMaker real-time LLM endpoint: role, scaling, alarms and roll-out."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import EndpointAlarmKind, EndpointSettings, OperationsConfig
from stacks.constructs import durations, pseudo
from stacks.constructs.alarm_topic import AlarmTopic
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.served_model import (
    acknowledge_instance_storage,
    add_served_model,
    container_environment,
    production_variant,
)
from stacks.constructs.serving_artifacts import ServingArtifacts

__all__ = ["INVOKE_ACTIONS", "VARIANT_NAME", "LlmEndpoint"]

VARIANT_NAME = "AllTraffic"
INVOKE_ACTIONS = ("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream")
_ENDPOINT_METRICS_NAMESPACE = "/aws/sagemaker/Endpoints"


class LlmEndpoint(Construct):
    """A SageMaker Model, EndpointConfig and Endpoint serving one model from our container.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    endpoint_name:
        The endpoint's name (``chatbot-<env>-<role>``).
    settings:
        Validated instance, engine, timeout, scaling and alarm settings.
    image:
        The inference container image (shared by all endpoints).
    artifacts:
        This role's artifacts (``serving.properties``, templates, index), staged under the
        served weights prefix.
    assets_bucket:
        Bucket holding the weights under ``settings.model.serving_prefix``.
    network:
        Where given, the hosts run network-isolated in its private subnets.
    operations:
        The environment's roll-out settings and alarm thresholds.
    alarm_topic:
        Where every alarm of this endpoint sends its ALARM and OK transitions.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        settings: EndpointSettings,
        image: ecr_assets.DockerImageAsset,
        artifacts: ServingArtifacts,
        assets_bucket: ModelAssetsBucket,
        network: PrivateNetwork | None = None,
        operations: OperationsConfig,
        alarm_topic: AlarmTopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = endpoint_name
        # A single-model endpoint: invocations name no inference component.
        self.component_name: str | None = None
        self.settings = settings
        self.operations = operations

        self.artifacts = artifacts
        served = add_served_model(
            self,
            endpoint_name=endpoint_name,
            settings=settings,
            image=image,
            artifacts=artifacts,
            assets_bucket=assets_bucket,
            network=network,
            log_namespaces=[_ENDPOINT_METRICS_NAMESPACE],
            log_writers="instance",
        )
        self.role, self.cfn_model = served.role, served.cfn_model

        self.cfn_endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[
                production_variant(
                    settings,
                    variant_name=VARIANT_NAME,
                    model_name=self.cfn_model.attr_model_name,
                    initial_variant_weight=1.0,
                )
            ],
        )
        acknowledge_instance_storage(self.cfn_endpoint_config, settings)
        self.alarms_by_kind = self._add_alarms()
        for alarm in self.alarms_by_kind.values():
            alarm_topic.notify(alarm)
        self.alarms = list(self.alarms_by_kind.values())
        # Literal names, for other stacks (a reference to the alarm would export its ARN).
        self.alarm_names: dict[EndpointAlarmKind, str] = {
            kind: self._alarm_name(kind) for kind in self.alarms_by_kind
        }
        self.rollback_alarms = [
            self.alarms_by_kind[kind] for kind in operations.rollout.rollback_alarms
        ]
        self.cfn_endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.cfn_endpoint_config.attr_endpoint_config_name,
            deployment_config=self._deployment_config(),
        )
        # The rollback alarms are named, not referenced: they must exist before the endpoint.
        for alarm in self.rollback_alarms:
            self.cfn_endpoint.node.add_dependency(alarm)
        self.endpoint_arn = self.cfn_endpoint.ref

        self.scalable_target: appscaling.ScalableTarget | None = None
        if settings.scaling is not None:
            self.scalable_target = self._add_autoscaling()

    def container_environment(self) -> dict[str, str]:
        """The ``OPTION_*`` variables of docs/interfaces.md, visible in ``cdk diff``."""
        return container_environment(self.settings, self.artifacts)

    def _deployment_config(self) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
        """Blue/green with the environment's traffic shifting, rolled back by its own alarms."""
        rollout = self.operations.rollout

        def percent(value: int | None) -> sagemaker.CfnEndpoint.CapacitySizeProperty | None:
            if value is None:
                return None
            return sagemaker.CfnEndpoint.CapacitySizeProperty(type="CAPACITY_PERCENT", value=value)

        # SageMaker reads the rollback alarms' state with the endpoint's execution role.
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[alarm.alarm_arn for alarm in self.rollback_alarms],
            )
        )
        return sagemaker.CfnEndpoint.DeploymentConfigProperty(
            blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                    type=rollout.traffic_shifting,
                    wait_interval_in_seconds=rollout.wait_interval_s,
                    canary_size=percent(rollout.canary_size_percent),
                    linear_step_size=percent(rollout.linear_step_percent),
                ),
                termination_wait_in_seconds=rollout.termination_wait_s,
                maximum_execution_timeout_in_seconds=rollout.max_execution_timeout_s,
            ),
            auto_rollback_configuration=sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                alarms=[
                    sagemaker.CfnEndpoint.AlarmProperty(alarm_name=alarm.alarm_name)
                    for alarm in self.rollback_alarms
                ]
            ),
        )

    def _add_autoscaling(self) -> appscaling.ScalableTarget:
        scaling = self.settings.scaling
        assert scaling is not None
        target = appscaling.ScalableTarget(
            self,
            "ScalableTarget",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{VARIANT_NAME}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=scaling.min_instances,
            max_capacity=scaling.max_instances,
            # Application Auto Scaling acts for SageMaker through its service-linked role; the
            # role CDK would otherwise create has no permissions and would fail to scale.
            role=iam.Role.from_role_arn(
                self,
                "AutoScalingServiceLinkedRole",
                f"arn:{pseudo.partition()}:iam::{pseudo.account_id()}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
            ),
        )
        # Without RoleARN the service creates that service-linked role when it is missing.
        cfn_target = target.node.default_child
        assert isinstance(cfn_target, appscaling.CfnScalableTarget)
        cfn_target.add_property_deletion_override("RoleARN")
        target.node.add_dependency(self.cfn_endpoint)
        target.scale_to_track_metric(
            "ConcurrencyTracking",
            target_value=scaling.target_concurrent_requests,
            predefined_metric=(
                appscaling.PredefinedMetric.SAGEMAKER_VARIANT_CONCURRENT_REQUESTS_PER_MODEL_HIGH_RESOLUTION
            ),
            scale_in_cooldown=Duration.seconds(scaling.scale_in_cooldown_s),
            scale_out_cooldown=Duration.seconds(scaling.scale_out_cooldown_s),
        )
        return target

    def metric(
        self,
        metric_name: str,
        *,
        statistic: str,
        namespace: str = "AWS/SageMaker",
        period: Duration | None = None,
    ) -> cloudwatch.Metric:
        """A metric of this endpoint's variant (``AWS/SageMaker`` or the instance namespace).

        Parameters
        ----------
        metric_name:
            E.g. ``Invocations``, ``ModelLatency``, ``GPUUtilization``.
        statistic:
            E.g. ``Sum``, ``p90``, ``Average``, ``SampleCount``.
        namespace:
            ``AWS/SageMaker`` (invocations, latency) or ``/aws/sagemaker/Endpoints``
            (instance CPU, memory and GPU).
        period:
            Aggregation period; default five minutes.

        Returns
        -------
        cloudwatch.Metric
            The metric, with ``EndpointName`` and ``VariantName`` dimensions.
        """
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME},
            statistic=statistic,
            period=period or durations.minutes(5),
        )

    def instance_metric(self, metric_name: str) -> cloudwatch.Metric:
        """An ``/aws/sagemaker/Endpoints`` average over the variant's instances (GPU, CPU)."""
        return self.metric(metric_name, statistic="Average", namespace=_ENDPOINT_METRICS_NAMESPACE)

    def metric_instance_count(self) -> cloudwatch.Metric:
        """Instances in service: SageMaker publishes no count, so one CPU sample per instance."""
        return self.metric(
            "CPUUtilization",
            statistic="SampleCount",
            namespace=_ENDPOINT_METRICS_NAMESPACE,
            # Each instance reports CPUUtilization once a minute: a minute's sample count is
            # the fleet size.
            period=durations.minutes(1),
        )

    def _alarm_name(self, kind: EndpointAlarmKind) -> str:
        return f"{self.endpoint_name}-{kind.replace('_', '-')}"

    def _alarm(
        self,
        kind: EndpointAlarmKind,
        description: str,
        metric: cloudwatch.IMetric,
        threshold: float,
        *,
        evaluation_periods: int,
        datapoints_to_alarm: int | None = None,
        comparison: cloudwatch.ComparisonOperator = (
            cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
        ),
    ) -> cloudwatch.Alarm:
        # Named: the endpoint's DeploymentConfig and the composite alarm refer to them by name.
        return cloudwatch.Alarm(
            self,
            "".join(part.capitalize() for part in kind.split("_")) + "Alarm",
            alarm_name=self._alarm_name(kind),
            alarm_description=f"{self.endpoint_name}: {description}",
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints_to_alarm,
            comparison_operator=comparison,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )

    def _add_alarms(self) -> dict[EndpointAlarmKind, cloudwatch.Alarm]:
        thresholds = self.operations.thresholds
        gpus = self.settings.instance.gpu_count
        gpu_periods = thresholds.gpu_sustained_minutes // 5
        alarms: dict[EndpointAlarmKind, cloudwatch.Alarm] = {
            "invocation_5xx": self._alarm(
                "invocation_5xx",
                "model container returned 5xx",
                self.metric("Invocation5XXErrors", statistic="Sum"),
                self.settings.error_alarm_5xx_per_5min,
                evaluation_periods=1,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            ),
            "model_latency_p90": self._alarm(
                "model_latency_p90",
                "p90 model latency above threshold",
                # ModelLatency is reported in microseconds.
                self.metric("ModelLatency", statistic="p90"),
                self.settings.latency_alarm_p90_ms * 1000,
                evaluation_periods=3,
                datapoints_to_alarm=2,
            ),
            # Per instance, the namespace sums its GPUs (0..100 x GPU count).
            "gpu_memory": self._alarm(
                "gpu_memory",
                f"GPU memory above {thresholds.gpu_memory_percent}% for "
                f"{thresholds.gpu_sustained_minutes} min",
                self.instance_metric("GPUMemoryUtilization"),
                thresholds.gpu_memory_percent * gpus,
                evaluation_periods=gpu_periods,
            ),
            "gpu_utilization": self._alarm(
                "gpu_utilization",
                f"GPU utilization above {thresholds.gpu_utilization_percent}% for "
                f"{thresholds.gpu_sustained_minutes} min",
                self.instance_metric("GPUUtilization"),
                thresholds.gpu_utilization_percent * gpus,
                evaluation_periods=gpu_periods,
            ),
        }
        scaling = self.settings.scaling
        if scaling is not None:
            alarms["instances_at_max"] = self._alarm(
                "instances_at_max",
                f"pinned at the scaling maximum of {scaling.max_instances} instances for "
                f"{thresholds.instances_at_max_minutes} min",
                self.metric_instance_count(),
                scaling.max_instances,
                evaluation_periods=thresholds.instances_at_max_minutes,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            )
        return alarms

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` invoke this endpoint, with and without response streaming.

        Parameters
        ----------
        grantee:
            The principal, e.g. the front-door function.

        Returns
        -------
        iam.Grant
            The grant on exactly this endpoint's ARN.
        """
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=list(INVOKE_ACTIONS), resource_arns=[self.endpoint_arn]
        )
