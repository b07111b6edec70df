"""Stateful stack: session table, model-assets bucket and alarm topic, protected in production."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from stacks.config import NotificationsConfig
from stacks.constructs.alarm_topic import AlarmTopic
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.session_table import SessionTable

__all__ = ["StatefulStack"]


class StatefulStack(Stack):
    """What outlives deployments: sessions, model assets, and the alarm topic's subscriptions.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name, part of the bucket name.
    protect_data:
        RETAIN + deletion protection on the resources, termination protection on the stack.
    notifications:
        Subscribers of the alarm topic (confirmed by hand, so kept with the stateful things).
    **stack_kwargs:
        Passed to :class:`aws_cdk.Stack` (``env``, ``description``, ...).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        protect_data: bool,
        notifications: NotificationsConfig,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, termination_protection=protect_data, **stack_kwargs)
        self.sessions = SessionTable(self, "Sessions", protect_data=protect_data)
        self.model_assets = ModelAssetsBucket(
            self, "ModelAssets", env_name=env_name, protect_data=protect_data
        )
        self.alarm_topic = AlarmTopic(
            self,
            "AlarmTopic",
            env_name=env_name,
            notifications=notifications,
            protect_data=protect_data,
        )
