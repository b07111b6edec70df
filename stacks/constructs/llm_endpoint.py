"""L3 construct: one SageMaker real-time LLM endpoint with its role, scaling and alarms."""

from __future__ import annotations

import json

from aws_cdk import Acknowledgment, Aws, Duration, Validations
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from chatbot_contracts.options import ServingOption
from stacks.config import EndpointSettings
from stacks.constructs.model_artifact import ModelArtifact
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.nag_ids import nag_resource_id

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
    artifact:
        This model's ``model.tar.gz`` (``serving.properties``, templates, index).
    assets_bucket:
        Bucket holding the weights under ``models/<settings.model.weights_name>/``.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        endpoint_name: str,
        settings: EndpointSettings,
        image: ecr_assets.DockerImageAsset,
        artifact: ModelArtifact,
        assets_bucket: ModelAssetsBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.endpoint_name = endpoint_name
        self.settings = settings
        model = settings.model

        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description=f"Execution role of SageMaker endpoint {endpoint_name}",
        )
        image.repository.grant_pull(self.role)
        artifact.grant_read(self.role)
        assets_bucket.grant_read_model(self.role, model.weights_name)
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id=nag_resource_id(
                    "AwsSolutions-IAM5", assets_bucket.model_objects_arn(model.weights_name)
                ),
                reason="Read-only access confined to this model's weights prefix "
                f"models/{model.weights_name}/; file names in a snapshot are unknown at synth.",
            )
        )
        self._grant_own_logs_and_metrics()

        self.cfn_model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=image.image_uri,
                model_data_url=artifact.s3_url,
                environment=self.container_environment(assets_bucket),
            ),
        )
        # SageMaker checks image and artifact access on CreateModel: policies first.
        default_policy = self.role.node.try_find_child("DefaultPolicy")
        if default_policy is not None:
            self.cfn_model.node.add_dependency(default_policy)

        instance = settings.instance
        self.cfn_endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=self.cfn_model.attr_model_name,
                    instance_type=instance.name,
                    initial_instance_count=settings.initial_instance_count,
                    initial_variant_weight=1.0,
                    container_startup_health_check_timeout_in_seconds=(
                        settings.container_startup_health_check_timeout_s
                    ),
                    model_data_download_timeout_in_seconds=settings.model_data_download_timeout_s,
                    volume_size_in_gb=settings.volume_size_gb,
                    routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
                        routing_strategy="LEAST_OUTSTANDING_REQUESTS"
                    ),
                )
            ],
        )
        if instance.nvme_backed:
            Validations.of(self.cfn_endpoint_config).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-SM2",
                    reason=f"{instance.name} stores data on local NVMe instance storage, which "
                    "Nitro encrypts in hardware (AES-256); SageMaker rejects a KmsKeyId for "
                    "such instances.",
                )
            )
        self.cfn_endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=endpoint_name,
            endpoint_config_name=self.cfn_endpoint_config.attr_endpoint_config_name,
        )
        self.endpoint_arn = self.cfn_endpoint.ref

        self.scalable_target: appscaling.ScalableTarget | None = None
        if settings.scaling is not None:
            self.scalable_target = self._add_autoscaling()
        self.alarms = self._add_alarms()

    def container_environment(self, assets_bucket: ModelAssetsBucket) -> dict[str, str]:
        """The ``OPTION_*`` variables of docs/interfaces.md, visible in ``cdk diff``."""
        model = self.settings.model
        options = {
            ServingOption.MODEL_ID: assets_bucket.model_uri(model.weights_name),
            ServingOption.TENSOR_PARALLEL_DEGREE: str(self.settings.tensor_parallel_degree),
            ServingOption.MAX_MODEL_LEN: str(model.max_model_len),
            ServingOption.DTYPE: model.dtype,
            ServingOption.GPU_MEMORY_UTILIZATION: str(model.gpu_memory_utilization),
            ServingOption.ENABLE_PREFIX_CACHING: json.dumps(model.enable_prefix_caching),
            ServingOption.MAX_NEW_TOKENS_CAP: str(model.max_new_tokens_cap),
        }
        return {option.env: value for option, value in options.items()}

    def _grant_own_logs_and_metrics(self) -> None:
        log_group_arn = (
            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:"
            f"{_ENDPOINT_METRICS_NAMESPACE}/{self.endpoint_name}"
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=[log_group_arn])
        )
        log_streams_arn = f"{log_group_arn}:log-stream:*"
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
                resources=[log_streams_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringEquals": {"cloudwatch:namespace": _ENDPOINT_METRICS_NAMESPACE}},
            )
        )
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", log_streams_arn),
                reason="Log stream names are chosen by SageMaker per instance at run time; the "
                "grant is confined to this endpoint's own log group.",
            ),
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no "
                "resource-level permissions; PutMetricData is confined by a "
                "cloudwatch:namespace condition to the SageMaker endpoint namespace.",
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
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
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

    def metric(self, metric_name: str, *, statistic: str) -> cloudwatch.Metric:
        """A 5-minute ``AWS/SageMaker`` metric of this endpoint's variant."""
        return cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name=metric_name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT_NAME},
            statistic=statistic,
            period=Duration.minutes(5),
        )

    def _add_alarms(self) -> list[cloudwatch.Alarm]:
        errors = cloudwatch.Alarm(
            self,
            "Invocation5xxAlarm",
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
