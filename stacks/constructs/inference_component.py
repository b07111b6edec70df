"""L3 construct: an endpoint that hosts one model as a SageMaker inference component."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from stacks.config import ROLLING_BATCH_COPIES, EndpointAlarmKind, EndpointSettings
from stacks.constructs import durations
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.served_model import (
    acknowledge_instance_storage,
    add_served_model,
    container_environment,
    production_variant,
)
from stacks.constructs.serving_artifacts import ServingArtifacts

__all__ = ["COMPONENT_VARIANT_NAME", "INVOKE_ACTIONS", "InferenceComponentEndpoint"]

COMPONENT_VARIANT_NAME = "AllTraffic"
INVOKE_ACTIONS = ("sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream")
# SageMaker writes a component's container logs and metrics under these prefixes.
_LOG_PREFIXES = ("/aws/sagemaker/Endpoints", "/aws/sagemaker/InferenceComponents")
# A rolling update bakes each batch this long while the component's alarms can roll it back.
ROLLING_WAIT_S = 600
ROLLING_TIMEOUT_S = 3600


class InferenceComponentEndpoint(Construct):
    """An endpoint with managed instance scaling and one inference component holding the model.

    The endpoint config names no model: instances come and go with the component's copies
    (``ManagedInstanceScaling``, minimum 0 where the copies may reach 0), and the component
    reserves whole GPUs and a share of host memory per copy, derived from the instance catalog
    and the role's tensor-parallel degree. Changes to the component roll out through its own
    ``DeploymentConfig`` (one copy at a time, auto-rollback on its alarms).

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    endpoint_name:
        The endpoint's name (``chatbot-<env>-<role>``); the component has the same name.
    settings:
        Validated settings with a ``component`` section.
    allow_zero_instances:
        Whether the endpoint may release its last instance (the copies may reach 0, always or
        off hours).
    image:
        The inference container image (shared by all endpoints).
    artifacts:
        This role's artifacts, staged under the served weights prefix.
    assets_bucket:
        Bucket holding the weights under ``settings.model.serving_prefix``.
    network:
        Where given, the Model runs network-isolated in its private subnets.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        settings: EndpointSettings,
        allow_zero_instances: bool,
        image: ecr_assets.DockerImageAsset,
        artifacts: ServingArtifacts,
        assets_bucket: ModelAssetsBucket,
        network: PrivateNetwork | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        component = settings.component
        if component is None:
            raise ValueError(f"{endpoint_name}: settings have no component section")
        self.endpoint_name = endpoint_name
        self.component_name: str | None = endpoint_name
        self.settings = settings

        self.artifacts = artifacts
        served = add_served_model(
            self,
            endpoint_name=endpoint_name,
            settings=settings,
            image=image,
            artifacts=artifacts,
            assets_bucket=assets_bucket,
            network=network,
            log_namespaces=_LOG_PREFIXES,
            log_writers="instance and copy",
        )
        self.role, self.cfn_model = served.role, served.cfn_model

        self.min_instances = (
            0 if allow_zero_instances else settings.instances_for(component.min_copies)
        )
        self.max_instances = settings.max_instances
        self.cfn_endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            # Required once the endpoint hosts components: SageMaker starts copies with it.
            execution_role_arn=self.role.role_arn,
            production_variants=[
                production_variant(
                    settings,
                    variant_name=COMPONENT_VARIANT_NAME,
                    managed_instance_scaling=sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty(
                        status="ENABLED",
                        min_instance_count=self.min_instances,
                        max_instance_count=self.max_instances,
                    ),
                )
            ],
        )
        acknowledge_instance_storage(self.cfn_endpoint_config, settings)
        self.cfn_endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.cfn_endpoint_config.attr_endpoint_config_name,
        )
        self.endpoint_arn = self.cfn_endpoint.ref

        # Literal names, so that the monitoring stack's composite alarm needs no export.
        self.alarm_names: dict[EndpointAlarmKind, str] = {
            kind: f"{endpoint_name}-{kind.replace('_', '-')}"
            for kind in ("invocation_5xx", "model_latency_p90")
        }
        self.alarms = self._add_alarms()
        self.cfn_component = sagemaker.CfnInferenceComponent(
            self,
            "Component",
            inference_component_name=endpoint_name,
            endpoint_name=self.cfn_endpoint.attr_endpoint_name,
            variant_name=COMPONENT_VARIANT_NAME,
            specification=sagemaker.CfnInferenceComponent.InferenceComponentSpecificationProperty(
                model_name=self.cfn_model.attr_model_name,
                compute_resource_requirements=sagemaker.CfnInferenceComponent.InferenceComponentComputeResourceRequirementsProperty(
                    number_of_accelerator_devices_required=settings.accelerators_per_copy,
                    min_memory_required_in_mb=settings.memory_per_copy_mb,
                ),
                startup_parameters=sagemaker.CfnInferenceComponent.InferenceComponentStartupParametersProperty(
                    container_startup_health_check_timeout_in_seconds=(
                        settings.container_startup_health_check_timeout_s
                    ),
                    model_data_download_timeout_in_seconds=settings.model_data_download_timeout_s,
                ),
            ),
            runtime_config=sagemaker.CfnInferenceComponent.InferenceComponentRuntimeConfigProperty(
                copy_count=component.initial_copies
            ),
            deployment_config=self._deployment_config(),
        )

    @property
    def component_arn(self) -> str:
        """The inference component's ARN."""
        return self.cfn_component.attr_inference_component_arn

    def container_environment(self) -> dict[str, str]:
        """The ``OPTION_*`` variables of docs/interfaces.md, visible in ``cdk diff``."""
        return container_environment(self.settings, self.artifacts)

    def _deployment_config(
        self,
    ) -> sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty:
        # One copy per step, forward and back: the endpoint's instance maximum leaves room for
        # exactly that (EndpointSettings.max_instances). Without a rollback batch size,
        # SageMaker restores every old copy at once.
        one_copy = sagemaker.CfnInferenceComponent.InferenceComponentCapacitySizeProperty(
            type="COPY_COUNT", value=ROLLING_BATCH_COPIES
        )
        return sagemaker.CfnInferenceComponent.InferenceComponentDeploymentConfigProperty(
            rolling_update_policy=sagemaker.CfnInferenceComponent.InferenceComponentRollingUpdatePolicyProperty(
                maximum_batch_size=one_copy,
                wait_interval_in_seconds=ROLLING_WAIT_S,
                maximum_execution_timeout_in_seconds=ROLLING_TIMEOUT_S,
                rollback_maximum_batch_size=one_copy,
            ),
            auto_rollback_configuration=sagemaker.CfnInferenceComponent.AutoRollbackConfigurationProperty(
                alarms=[
                    sagemaker.CfnInferenceComponent.AlarmProperty(alarm_name=alarm.alarm_name)
                    for alarm in self.alarms
                ]
            ),
        )

    def metric(
        self, metric_name: str, *, statistic: str, period: Duration | None = None
    ) -> cloudwatch.Metric:
        """An ``AWS/SageMaker`` metric of this inference component (5-minute default period)."""
        return cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name=metric_name,
            dimensions_map={"InferenceComponentName": self.endpoint_name},
            statistic=statistic,
            period=period or durations.minutes(5),
        )

    def instance_metric(self, metric_name: str) -> cloudwatch.Metric:
        """An ``/aws/sagemaker/Endpoints`` average over the endpoint's instances (GPU, CPU)."""
        return cloudwatch.Metric(
            namespace=_LOG_PREFIXES[0],
            metric_name=metric_name,
            dimensions_map={
                "EndpointName": self.endpoint_name,
                "VariantName": COMPONENT_VARIANT_NAME,
            },
            statistic="Average",
            period=durations.minutes(5),
        )

    def metric_instance_count(self) -> cloudwatch.Metric:
        """Instances in service: SageMaker publishes no count, so one CPU sample per instance."""
        return cloudwatch.Metric(
            namespace=_LOG_PREFIXES[0],
            metric_name="CPUUtilization",
            dimensions_map={
                "EndpointName": self.endpoint_name,
                "VariantName": COMPONENT_VARIANT_NAME,
            },
            statistic="SampleCount",
            period=durations.minutes(1),
        )

    def _add_alarms(self) -> list[cloudwatch.Alarm]:
        errors = cloudwatch.Alarm(
            self,
            "Invocation5xxAlarm",
            alarm_name=self.alarm_names["invocation_5xx"],
            alarm_description=f"{self.endpoint_name}: model container returned 5xx",
            metric=self.metric("Invocation5XXErrors", statistic="Sum"),
            threshold=self.settings.error_alarm_5xx_per_5min,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        latency = cloudwatch.Alarm(
            self,
            "ModelLatencyAlarm",
            alarm_name=self.alarm_names["model_latency_p90"],
            alarm_description=f"{self.endpoint_name}: p90 model latency above threshold",
            # ModelLatency is reported in microseconds.
            metric=self.metric("ModelLatency", statistic="p90"),
            threshold=self.settings.latency_alarm_p90_ms * 1000,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        return [errors, latency]

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` invoke this endpoint's component, with and without streaming.

        Parameters
        ----------
        grantee:
            The principal, e.g. the front-door function.

        Returns
        -------
        iam.Grant
            The grant on exactly this endpoint's and this component's ARNs.
        """
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(INVOKE_ACTIONS),
            resource_arns=[self.endpoint_arn, self.component_arn],
        )
