"""Inference stack: the shared container image and the chat and moderation endpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import IgnoreMode, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from stacks.config import EndpointSettings
from stacks.constructs.build_context import repository_context_excludes
from stacks.constructs.llm_endpoint import LlmEndpoint
from stacks.constructs.model_artifact import ModelArtifact
from stacks.constructs.model_assets_bucket import ModelAssetsBucket

__all__ = ["InferenceStack"]


class InferenceStack(Stack):
    """Both SageMaker endpoints, running one image built from ``container/``.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    container_dir:
        The ``container/`` build context.
    base_image:
        Literal base image URI, passed to the Dockerfile as ``BASE_IMAGE``.
    artifacts_dir:
        ``model_artifacts/``, holding ``chat/`` and ``moderation/``.
    artifact_build_dir:
        Where the deterministic archives are written before CDK stages them.
    endpoint_names:
        Endpoint name per role (``chat``, ``moderation``).
    chat, moderation:
        Validated settings of each endpoint.
    assets_bucket:
        The model-assets bucket of the stateful stack.
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
        artifact_build_dir: Path,
        endpoint_names: dict[str, str],
        chat: EndpointSettings,
        moderation: EndpointSettings,
        assets_bucket: ModelAssetsBucket,
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
        self.endpoints: dict[str, LlmEndpoint] = {}
        for role, settings in (("chat", chat), ("moderation", moderation)):
            artifact = ModelArtifact(
                self,
                f"{role.capitalize()}Artifact",
                source_dir=artifacts_dir / role,
                build_dir=artifact_build_dir,
            )
            self.endpoints[role] = LlmEndpoint(
                self,
                f"{role.capitalize()}Endpoint",
                endpoint_name=endpoint_names[role],
                settings=settings,
                image=self.image,
                artifact=artifact,
                assets_bucket=assets_bucket,
            )

    @property
    def chat(self) -> LlmEndpoint:
        """The streaming chat endpoint."""
        return self.endpoints["chat"]

    @property
    def moderation(self) -> LlmEndpoint:
        """The moderation endpoint."""
        return self.endpoints["moderation"]
