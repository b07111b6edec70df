"""What the front door and the customization pipeline need from a hosted model, in either mode."""

from __future__ import annotations

from typing import Protocol

from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker

from stacks.config import EndpointAlarmKind, EndpointSettings

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
    # Alarm names by kind (literal, for the monitoring stack's composite alarm).
    alarm_names: dict[EndpointAlarmKind, str]

    def container_environment(self) -> dict[str, str]:
        """The container's ``OPTION_*`` variables."""
        ...

    def metric(self, metric_name: str, *, statistic: str) -> cloudwatch.Metric:
        """An ``AWS/SageMaker`` metric of the model (its endpoint variant or its component)."""
        ...

    def instance_metric(self, metric_name: str) -> cloudwatch.Metric:
        """An ``/aws/sagemaker/Endpoints`` average over the instances (GPU, CPU)."""
        ...

    def metric_instance_count(self) -> cloudwatch.Metric:
        """Instances in service."""
        ...

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` invoke the model, with and without response streaming."""
        ...
