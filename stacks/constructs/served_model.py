"""The SageMaker Model of one role and its execution role: shared by both hosting modes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Acknowledgment, CfnTag, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from chatbot_contracts.options import PROPERTIES_PATH_ENV, ServingOption
from stacks.config import EndpointSettings
from stacks.constructs import pseudo
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.nag_ids import nag_resource_id
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.serving_artifacts import MODEL_DIR, ServingArtifacts

__all__ = ["ServedModel", "add_served_model", "container_environment"]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """The execution role and the Model that a plain endpoint or an inference component uses."""

    role: iam.Role
    cfn_model: sagemaker.CfnModel


def container_environment(
    settings: EndpointSettings, artifacts: ServingArtifacts
) -> dict[str, str]:
    """The ``OPTION_*`` variables of docs/interfaces.md, visible in ``cdk diff``.

    The weights are /opt/ml/model itself (SageMaker's S3Prefix download); ``serving.properties``
    is in the staged artifacts folder beneath it (whose relative paths resolve against it).

    Parameters
    ----------
    settings
        The role's validated settings.
    artifacts
        The role's staged artifacts.

    Returns
    -------
    dict[str, str]
        Environment variable name to value.
    """
    model = settings.model
    options = {
        ServingOption.MODEL_ID: MODEL_DIR,
        ServingOption.TENSOR_PARALLEL_DEGREE: str(settings.tensor_parallel_degree),
        ServingOption.MAX_MODEL_LEN: str(model.max_model_len),
        ServingOption.DTYPE: model.dtype,
        ServingOption.GPU_MEMORY_UTILIZATION: str(model.gpu_memory_utilization),
        ServingOption.ENABLE_PREFIX_CACHING: json.dumps(model.enable_prefix_caching),
        ServingOption.MAX_NEW_TOKENS_CAP: str(model.max_new_tokens_cap),
    }
    return {
        PROPERTIES_PATH_ENV: artifacts.properties_path,
        **{option.env: value for option, value in options.items()},
    }


def add_served_model(
    scope: Construct,
    *,
    endpoint_name: str,
    settings: EndpointSettings,
    image: ecr_assets.DockerImageAsset,
    artifacts: ServingArtifacts,
    assets_bucket: ModelAssetsBucket,
    network: PrivateNetwork | None,
    log_namespaces: Sequence[str],
    log_writers: str,
) -> ServedModel:
    """Add ``ExecutionRole`` and ``Model`` to ``scope`` for one role's endpoint.

    SageMaker downloads the uncompressed weights prefix (with the staged artifacts beneath it)
    into /opt/ml/model itself: the container needs no S3 access, which network isolation would
    forbid anyway. The role may write the endpoint's own logs and metrics
    (:func:`grant_own_logs_and_metrics`), and the Model waits for its policy.

    Parameters
    ----------
    scope
        The endpoint construct (the children keep their ids there).
    endpoint_name
        The endpoint's name, for the role's description.
    settings
        The role's validated settings.
    image
        The inference image.
    artifacts
        The role's staged artifacts.
    assets_bucket
        The bucket holding the served prefix.
    network
        Where given, the Model runs network-isolated in its private subnets.
    log_namespaces, log_writers
        As ``namespaces`` and ``writers`` of :func:`grant_own_logs_and_metrics`.

    Returns
    -------
    ServedModel
        The role and the Model.
    """
    model = settings.model
    role = iam.Role(
        scope,
        "ExecutionRole",
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description=f"Execution role of SageMaker endpoint {endpoint_name}",
    )
    image.repository.grant_pull(role)
    assets_bucket.grant_read_prefix(role, model.serving_prefix)
    Validations.of(role).acknowledge(
        Acknowledgment(
            id=nag_resource_id(
                "AwsSolutions-IAM5", assets_bucket.prefix_objects_arn(model.serving_prefix)
            ),
            reason="Read-only access confined to the served weights prefix "
            f"{model.serving_prefix} (weights and staged artifacts); file names in a "
            "snapshot are unknown at synth.",
        )
    )
    if network is not None:
        network.grant_eni_management(role, service="sagemaker")
    cfn_model = sagemaker.CfnModel(
        scope,
        "Model",
        execution_role_arn=role.role_arn,
        primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
            image=image.image_uri,
            model_data_source=sagemaker.CfnModel.ModelDataSourceProperty(
                s3_data_source=sagemaker.CfnModel.S3DataSourceProperty(
                    s3_uri=assets_bucket.prefix_uri(model.serving_prefix),
                    s3_data_type="S3Prefix",
                    compression_type="None",
                )
            ),
            environment=container_environment(settings, artifacts),
        ),
        enable_network_isolation=network is not None,
        # Lineage of a promoted model (make promote): the package its weights came from.
        tags=(
            [CfnTag(key="chatbot:model-package", value=model.model_package_arn)]
            if model.model_package_arn is not None
            else None
        ),
        vpc_config=(
            sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=[network.endpoint_hosts_security_group.security_group_id],
                subnets=[subnet.subnet_id for subnet in network.subnets],
            )
            if network is not None
            else None
        ),
    )
    cfn_model.node.add_dependency(artifacts.deployment)
    grant_own_logs_and_metrics(role, endpoint_name, log_namespaces, writers=log_writers)
    # SageMaker checks image and data access on CreateModel: policies first.
    default_policy = role.node.try_find_child("DefaultPolicy")
    if default_policy is not None:
        cfn_model.node.add_dependency(default_policy)
    return ServedModel(role=role, cfn_model=cfn_model)


def grant_own_logs_and_metrics(
    role: iam.IRole, endpoint_name: str, namespaces: Sequence[str], *, writers: str
) -> None:
    """Let a served model's role write its own logs and metrics, and nothing else.

    Parameters
    ----------
    role
        The model's execution role.
    endpoint_name
        The endpoint: its log groups are ``<namespace>/<endpoint_name>``.
    namespaces
        The SageMaker log-group prefixes, which are also the metric namespaces it writes to.
    writers
        Who names the log streams at run time (for the cdk-nag acknowledgement), e.g.
        ``"instance"``.
    """
    log_groups = [
        pseudo.regional_arn("logs", f"log-group:{namespace}/{endpoint_name}")
        for namespace in namespaces
    ]
    log_streams = [f"{group}:log-stream:*" for group in log_groups]
    role.add_to_principal_policy(
        iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=log_groups)
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            resources=log_streams,
        )
    )
    namespace: str | list[str] = namespaces[0] if len(namespaces) == 1 else list(namespaces)
    role.add_to_principal_policy(
        iam.PolicyStatement(
            actions=["cloudwatch:PutMetricData"],
            resources=["*"],
            conditions={"StringEquals": {"cloudwatch:namespace": namespace}},
        )
    )
    Validations.of(role).acknowledge(
        *[
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", streams),
                reason=f"Log stream names are chosen by SageMaker per {writers} at run time; "
                "the grant is confined to this endpoint's own log group.",
            )
            for streams in log_streams
        ],
        Acknowledgment(
            id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
            reason="ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no "
            "resource-level permissions; PutMetricData is confined by a "
            "cloudwatch:namespace condition to the SageMaker endpoint namespaces.",
        ),
    )


def production_variant(
    settings: EndpointSettings,
    *,
    variant_name: str,
    model_name: str | None = None,
    initial_variant_weight: float | None = None,
    managed_instance_scaling: (
        sagemaker.CfnEndpointConfig.ManagedInstanceScalingProperty | None
    ) = None,
) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
    """The production variant of an endpoint config, from the endpoint's settings.

    Both kinds of endpoint share the instance, count, start-up and download timeouts, volume
    (``None`` on NVMe-backed instances, where SageMaker rejects it) and routing to the least
    busy instance; the rest is per kind.

    Parameters
    ----------
    settings
        The endpoint's settings.
    variant_name
        The variant's name.
    model_name
        The model a single-model endpoint serves (none with inference components).
    initial_variant_weight
        Traffic weight of a single-model endpoint's variant.
    managed_instance_scaling
        Instance scaling of an endpoint that hosts inference components.

    Returns
    -------
    sagemaker.CfnEndpointConfig.ProductionVariantProperty
        The variant.
    """
    return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
        variant_name=variant_name,
        model_name=model_name,
        instance_type=settings.instance.name,
        initial_instance_count=settings.initial_instance_count,
        initial_variant_weight=initial_variant_weight,
        container_startup_health_check_timeout_in_seconds=(
            settings.container_startup_health_check_timeout_s
        ),
        model_data_download_timeout_in_seconds=settings.model_data_download_timeout_s,
        volume_size_in_gb=settings.volume_size_gb,
        managed_instance_scaling=managed_instance_scaling,
        routing_config=sagemaker.CfnEndpointConfig.RoutingConfigProperty(
            routing_strategy="LEAST_OUTSTANDING_REQUESTS"
        ),
    )


def acknowledge_instance_storage(
    endpoint_config: sagemaker.CfnEndpointConfig, settings: EndpointSettings
) -> None:
    """Acknowledge cdk-nag's missing-KMS-key finding where SageMaker forbids the key.

    Parameters
    ----------
    endpoint_config
        The endpoint config.
    settings
        Its endpoint's settings; nothing is acknowledged unless the instance is NVMe-backed.
    """
    instance = settings.instance
    if instance.nvme_backed:
        Validations.of(endpoint_config).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-SM2",
                reason=f"{instance.name} stores data on local NVMe instance storage, which "
                "Nitro encrypts in hardware (AES-256); SageMaker rejects a KmsKeyId for "
                "such instances.",
            )
        )
