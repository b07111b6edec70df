"""Customization stack: the jobs image and the fine-tuning / continued pre-training pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import IgnoreMode, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from constructs import Construct

from stacks.constructs.build_context import repository_context_excludes
from stacks.constructs.customization_pipeline import CustomizationPipeline
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.private_network import PrivateNetwork

__all__ = ["CustomizationStack"]


class CustomizationStack(Stack):
    """The customization pipeline of one environment; it registers models, never deploys them.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name.
    repository_root:
        Build context of the jobs image (``customize/Dockerfile``).
    base_image:
        Base image URI of the jobs image (the inference image's base: CUDA torch and
        transformers), passed as ``BASE_IMAGE``.
    assets_bucket:
        The model-assets bucket of the stateful stack.
    base_weights_name:
        Folder under ``models/`` of the base model to customize.
    serving_image:
        The inference image, from the inference stack (named in registered model packages).
    training_instance_type, evaluation_instance_type:
        GPU instances of the training and evaluation jobs.
    use_spot:
        Managed spot training with checkpoints.
    training_hyperparameters, evaluation_tensor_parallel_degree, evaluation_max_model_len:
        Default training hyperparameters; the chat endpoint's vLLM settings for evaluation.
    network:
        The environment's private network, where it has one: the jobs run isolated in it.
    **stack_kwargs:
        Passed to :class:`aws_cdk.Stack`.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        repository_root: Path,
        base_image: str,
        assets_bucket: ModelAssetsBucket,
        base_weights_name: str,
        serving_image: ecr_assets.DockerImageAsset,
        training_instance_type: str = "ml.g5.2xlarge",
        evaluation_instance_type: str = "ml.g5.xlarge",
        use_spot: bool = False,
        training_hyperparameters: Mapping[str, str] | None = None,
        evaluation_tensor_parallel_degree: int = 1,
        evaluation_max_model_len: int = 2048,
        network: PrivateNetwork | None = None,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **stack_kwargs)
        self.jobs_image = ecr_assets.DockerImageAsset(
            self,
            "JobsImage",
            directory=str(repository_root),
            file="customize/Dockerfile",
            platform=ecr_assets.Platform.LINUX_AMD64,
            build_args={"BASE_IMAGE": base_image},
            exclude=repository_context_excludes(
                "customize", "requirements/customize.txt", "requirements/customize-gpu.txt"
            ),
            ignore_mode=IgnoreMode.DOCKER,
        )
        self.pipeline = CustomizationPipeline(
            self,
            "Pipeline",
            env_name=env_name,
            assets_bucket=assets_bucket,
            base_weights_name=base_weights_name,
            training_image=self.jobs_image,
            serving_image=serving_image,
            training_instance_type=training_instance_type,
            evaluation_instance_type=evaluation_instance_type,
            use_spot=use_spot,
            training_hyperparameters=training_hyperparameters,
            evaluation_tensor_parallel_degree=evaluation_tensor_parallel_degree,
            evaluation_max_model_len=evaluation_max_model_len,
            network=network,
        )
