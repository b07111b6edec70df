"""Network stack: the environment's private VPC, its VPC endpoints and security groups."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from stacks.config import NetworkConfig
from stacks.constructs.private_network import PrivateNetwork

__all__ = ["NetworkStack"]


class NetworkStack(Stack):
    """The VPC the endpoints and the front door run in, where the environment has one.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name.
    settings:
        Validated network settings.
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
        settings: NetworkConfig,
        termination_protection: bool,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(
            scope, construct_id, termination_protection=termination_protection, **stack_kwargs
        )
        self.network = PrivateNetwork(self, "Network", env_name=env_name, settings=settings)
