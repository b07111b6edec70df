"""Front-door stack: the Lambda front door and its REST API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from stacks.config import FrontDoorConfig
from stacks.constructs.front_door_api import FrontDoorApi
from stacks.constructs.hosted_model import HostedModel
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.session_table import SessionTable

__all__ = ["FrontDoorStack"]


class FrontDoorStack(Stack):
    """Public entry point: REST API, streaming Lambda integration, auth and throttling.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name.
    settings:
        Validated front-door settings.
    wake_retry_after_s:
        ``Retry-After`` while a model wakes from zero (the hosting section's).
    code_dir:
        The ``lambda/`` build context.
    chat, moderation:
        Endpoints of the inference stack.
    sessions:
        Session table of the stateful stack.
    network:
        The environment's private network, where it has one: the function runs in it.
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
        env_name: str,
        settings: FrontDoorConfig,
        wake_retry_after_s: int,
        code_dir: Path,
        chat: HostedModel,
        moderation: HostedModel,
        sessions: SessionTable,
        network: PrivateNetwork | None = None,
        termination_protection: bool,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(
            scope, construct_id, termination_protection=termination_protection, **stack_kwargs
        )
        self.front_door = FrontDoorApi(
            self,
            "FrontDoor",
            env_name=env_name,
            settings=settings,
            code_dir=code_dir,
            chat=chat,
            moderation=moderation,
            sessions=sessions,
            wake_retry_after_s=wake_retry_after_s,
            network=network,
        )
        CfnOutput(self, "ApiUrl", value=self.front_door.api.url)
        user_pool, client = self.front_door.user_pool, self.front_door.user_pool_client
        if user_pool is not None and client is not None:
            CfnOutput(self, "UserPoolId", value=user_pool.user_pool_id)
            CfnOutput(self, "UserPoolClientId", value=client.user_pool_client_id)
