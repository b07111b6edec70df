"""One CDK Stage per environment: stateful, inference, front door, monitoring, customization."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Environment, Stage
from constructs import Construct

from stacks.base_image import resolve_base_image
from stacks.config import EnvironmentConfig
from stacks.customization_stack import CustomizationStack
from stacks.front_door_stack import FrontDoorStack
from stacks.inference_stack import InferenceStack
from stacks.isolation import refuse_network_dependencies
from stacks.monitoring_stack import MonitoringStack
from stacks.network_stack import NetworkStack
from stacks.stateful_stack import StatefulStack

__all__ = ["ChatbotStage", "SourcePaths"]


@dataclass(frozen=True, slots=True)
class SourcePaths:
    """Where the stage finds what it packages.

    Attributes
    ----------
    container_dir:
        ``container/`` (inference image build context); its parent, the repository root, is
        the customization jobs image's build context.
    lambda_dir:
        ``lambda/`` (front-door image build context).
    artifacts_dir:
        ``model_artifacts/`` with one folder per role.
    """

    container_dir: Path
    lambda_dir: Path
    artifacts_dir: Path

    @classmethod
    def from_repository(cls, root: Path) -> SourcePaths:
        """The standard layout of this repository under ``root``."""
        return cls(
            container_dir=root / "container",
            lambda_dir=root / "lambda",
            artifacts_dir=root / "model_artifacts",
        )


class ChatbotStage(Stage):
    """The whole chatbot for one environment.

    Parameters
    ----------
    scope:
        The app.
    config:
        The environment's validated settings; the stage is named ``chatbot-<name>``.
    sources:
        Paths of the build contexts and artifacts.
    """

    def __init__(
        self, scope: Construct, *, config: EnvironmentConfig, sources: SourcePaths
    ) -> None:
        env = (
            Environment(account=config.account, region=config.region)
            if config.account is not None
            else None
        )
        super().__init__(scope, f"chatbot-{config.name}", env=env)
        self.config = config
        self.stateful = StatefulStack(
            self,
            "Stateful",
            env_name=config.name,
            protect_data=config.protect_data,
            notifications=config.operations.notifications,
            description=f"chatbot {config.name}: session table, model-assets bucket, alarm topic",
        )
        self.network: NetworkStack | None = None
        if config.network is not None:
            refuse_network_dependencies(
                config.name, sources.artifacts_dir, tuple(config.endpoint_names)
            )
            self.network = NetworkStack(
                self,
                "Network",
                env_name=config.name,
                settings=config.network,
                termination_protection=config.protect_data,
                description=f"chatbot {config.name}: private VPC, VPC endpoints, flow logs",
            )
        network = self.network.network if self.network is not None else None
        self.inference = InferenceStack(
            self,
            "Inference",
            container_dir=sources.container_dir,
            base_image=resolve_base_image(config.base_image, config.region),
            artifacts_dir=sources.artifacts_dir,
            endpoint_names=config.endpoint_names,
            chat=config.chat,
            moderation=config.moderation,
            hosting=config.hosting,
            assets_bucket=self.stateful.model_assets,
            network=network,
            operations=config.operations,
            alarm_topic=self.stateful.alarm_topic,
            termination_protection=config.protect_data,
            description=f"chatbot {config.name}: SageMaker chat and moderation endpoints",
        )
        self.front_door = FrontDoorStack(
            self,
            "FrontDoor",
            env_name=config.name,
            settings=config.front_door,
            wake_retry_after_s=config.hosting.wake_retry_after_s,
            code_dir=sources.lambda_dir,
            chat=self.inference.chat,
            moderation=self.inference.moderation,
            sessions=self.stateful.sessions,
            network=network,
            termination_protection=config.protect_data,
            description=f"chatbot {config.name}: streaming REST API and front-door Lambda",
        )
        # The endpoints read weights from the bucket by name, which CloudFormation cannot see.
        self.inference.add_stack_dependency(self.stateful)
        self.monitoring = MonitoringStack(
            self,
            "Monitoring",
            env_name=config.name,
            thresholds=config.operations.thresholds,
            front_door_settings=config.front_door,
            front_door=self.front_door.front_door,
            sessions=self.stateful.sessions,
            endpoints=list(self.inference.endpoints.values()),
            alarm_topic=self.stateful.alarm_topic,
            termination_protection=config.protect_data,
            description=f"chatbot {config.name}: alarms, composite alarm and dashboard",
        )
        # The composite alarm and the dashboard name the endpoints' alarms.
        self.monitoring.add_stack_dependency(self.inference)
        self.customization: CustomizationStack | None = None
        if config.customization is not None:
            self.customization = CustomizationStack(
                self,
                "Customization",
                env_name=config.name,
                repository_root=sources.container_dir.parent,
                base_image=resolve_base_image(config.base_image, config.region),
                assets_bucket=self.stateful.model_assets,
                base_weights_name=config.chat.model.weights_name,
                serving_image=self.inference.image,
                training_instance_type=config.customization.training_instance_type,
                evaluation_instance_type=config.customization.evaluation_instance_type,
                use_spot=config.customization.use_spot,
                training_hyperparameters=config.customization.training.hyperparameters(),
                evaluation_tensor_parallel_degree=config.chat.tensor_parallel_degree,
                evaluation_max_model_len=config.chat.model.max_model_len,
                network=network,
                termination_protection=config.protect_data,
                description=f"chatbot {config.name}: customization pipeline",
            )
            # The jobs read base weights and datasets from the bucket by name, as the endpoints do;
            # registered packages name the inference image, which the Inference stack publishes.
            self.customization.add_stack_dependency(self.stateful)
            self.customization.add_stack_dependency(self.inference)
