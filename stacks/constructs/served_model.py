"""The SageMaker Model of one role and its execution role: shared by both hosting modes."""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Acknowledgment, CfnTag, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from chatbot_contracts.options import PROPERTIES_PATH_ENV, ServingOption
from stacks.config import EndpointSettings
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
) -> ServedModel:
    """Add ``ExecutionRole`` and ``Model`` to ``scope`` for one role's endpoint.

    SageMaker downloads the uncompressed weights prefix (with the staged artifacts beneath it)
    into /opt/ml/model itself: the container needs no S3 access, which network isolation would
    forbid anyway.

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

    Returns
    -------
    ServedModel
        The role (more grants may be added) and the Model.
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
    return ServedModel(role=role, cfn_model=cfn_model)
