"""Inference stack: the shared container image and the chat and moderation endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import IgnoreMode, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from stacks.config import EndpointSettings, HostingConfig
from stacks.constructs.build_context import repository_context_excludes
from stacks.constructs.component_scaling import ComponentScaling
from stacks.constructs.hosted_model import HostedModel
from stacks.constructs.inference_component import InferenceComponentEndpoint
from stacks.constructs.llm_endpoint import LlmEndpoint
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.serving_artifacts import ServingArtifacts

__all__ = ["InferenceStack"]


class InferenceStack(Stack):
    """Both SageMaker endpoints, running one image built from ``container/``.

    ``hosting.mode`` picks single-model endpoints (:class:`LlmEndpoint`) or one endpoint per
    role hosting an inference component (:class:`InferenceComponentEndpoint`) with copy-count
    autoscaling (:class:`ComponentScaling`), which can scale to zero.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    container_dir:
        The ``container/`` build context.
    base_image:
        Literal base image URI, passed to the Dockerfile as ``BASE_IMAGE``.
    artifacts_dir:
        ``model_artifacts/``, holding ``chat/`` and ``moderation/``; each is staged under its
        endpoint's weights prefix.
    endpoint_names:
        Endpoint name per role (``chat``, ``moderation``).
    chat, moderation:
        Validated settings of each endpoint.
    hosting:
        The environment's hosting mode and scale-to-zero settings.
    assets_bucket:
        The model-assets bucket of the stateful stack.
    network:
        The environment's private network, where it has one: endpoints run isolated in it.
    termination_protection:
        Protect the stack from deletion.
    **stack_kwargs:
        Passed to :class:`aws_cdk.Stack`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        container_dir: Path,
        base_image: str,
        artifacts_dir: Path,
        endpoint_names: dict[str, str],
        chat: EndpointSettings,
        moderation: EndpointSettings,
        hosting: HostingConfig,
        assets_bucket: ModelAssetsBucket,
        network: PrivateNetwork | None = None,
        termination_protection: bool,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(
            scope, construct_id, termination_protection=termination_protection, **stack_kwargs
        )
        self.image = ecr_assets.DockerImageAsset(
            self,
            "InferenceImage",
            directory=str(container_dir.parent),
            file=f"{container_dir.name}/Dockerfile",
            platform=ecr_assets.Platform.LINUX_AMD64,
            build_args={"BASE_IMAGE": base_image},
            exclude=repository_context_excludes(container_dir.name),
            ignore_mode=IgnoreMode.DOCKER,
        )
        self.endpoints: dict[str, HostedModel] = {}
        self.scaling: dict[str, ComponentScaling] = {}
        for role, settings in (("chat", chat), ("moderation", moderation)):
            artifacts = ServingArtifacts(
                self,
                f"{role.capitalize()}Artifacts",
                source_dir=artifacts_dir / role,
                role=role,
                assets_bucket=assets_bucket,
                weights_prefix=settings.model.serving_prefix,
            )
            if not hosting.uses_components:
                self.endpoints[role] = LlmEndpoint(
                    self,
                    f"{role.capitalize()}Endpoint",
                    endpoint_name=endpoint_names[role],
                    settings=settings,
                    image=self.image,
                    artifacts=artifacts,
                    assets_bucket=assets_bucket,
                    network=network,
                )
                continue
            assert settings.component is not None  # validated with the hosting mode
            zero = hosting.scale_to_zero
            component = InferenceComponentEndpoint(
                self,
                f"{role.capitalize()}Component",
                endpoint_name=endpoint_names[role],
                settings=settings,
                allow_zero_instances=zero is not None
                and (settings.component.min_copies == 0 or zero.off_hours is not None),
                image=self.image,
                artifacts=artifacts,
                assets_bucket=assets_bucket,
                network=network,
            )
            self.endpoints[role] = component
            self.scaling[role] = ComponentScaling(
                self,
                f"{role.capitalize()}Scaling",
                target=component,
                copies=settings.component,
                scale_to_zero=zero,
            )

    @property
    def chat(self) -> HostedModel:
        """The streaming chat model."""
        return self.endpoints["chat"]

    @property
    def moderation(self) -> HostedModel:
        """The moderation model."""
        return self.endpoints["moderation"]
