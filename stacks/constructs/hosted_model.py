"""What the front door and the customization pipeline need from a hosted model, in either mode."""

from __future__ import annotations

from typing import Protocol

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker

from stacks.config import EndpointSettings
from stacks.constructs.model_assets_bucket import ModelAssetsBucket

__all__ = ["HostedModel"]


class HostedModel(Protocol):
    """A model served from ``chatbot-<env>-<role>``: a plain endpoint or an inference component.

    Attributes
    ----------
    endpoint_name, endpoint_arn:
        The endpoint invocations go to.
    component_name:
        The inference component to name in each invocation (``InferenceComponentName``), or
        ``None`` for a plain single-model endpoint.
    settings:
        The role's validated settings.
    role:
        The execution role the model runs with.
    cfn_model:
        The SageMaker Model.
    alarms:
        The alarms that roll a deployment back.
    """

    endpoint_name: str
    endpoint_arn: str
    component_name: str | None
    settings: EndpointSettings
    role: iam.Role
    cfn_model: sagemaker.CfnModel
    alarms: list[cloudwatch.Alarm]

    def container_environment(self, assets_bucket: ModelAssetsBucket) -> dict[str, str]:
        """The container's ``OPTION_*`` variables."""
        ...

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` invoke the model, with and without response streaming."""
        ...
