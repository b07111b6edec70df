"""Monitoring stack: the environment's service alarms, composite alarm and dashboard."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from stacks.config import FrontDoorConfig, ThresholdsConfig
from stacks.constructs import durations
from stacks.constructs.alarm_topic import AlarmTopic
from stacks.constructs.front_door_api import LAMBDA_TIMEOUT_MINUTES, STAGE_NAME, FrontDoorApi
from stacks.constructs.hosted_model import HostedModel
from stacks.constructs.operations_dashboard import OperationsDashboard
from stacks.constructs.service_alarms import ServiceAlarms
from stacks.constructs.session_table import SessionTable

__all__ = ["MonitoringStack"]


class MonitoringStack(Stack):
    """What an operator watches: service alarms, ``chatbot-<env>-unhealthy``, the dashboard.

    The endpoints' own alarms live with them in the inference stack (their deployment
    configuration rolls back on them); here they are read by name.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name.
    thresholds:
        The environment's alarm thresholds.
    front_door_settings:
        Front-door settings (reserved concurrency).
    front_door:
        The front door of the front-door stack.
    sessions:
        The session table of the stateful stack.
    endpoints:
        The endpoints of the inference stack.
    alarm_topic:
        The alarm topic of the stateful stack.
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
        thresholds: ThresholdsConfig,
        front_door_settings: FrontDoorConfig,
        front_door: FrontDoorApi,
        sessions: SessionTable,
        endpoints: list[HostedModel],
        alarm_topic: AlarmTopic,
        termination_protection: bool,
        **stack_kwargs: Any,
    ) -> None:
        super().__init__(
            scope, construct_id, termination_protection=termination_protection, **stack_kwargs
        )
        api_name, stage_name = front_door.api.rest_api_name, STAGE_NAME
        self.alarms = ServiceAlarms(
            self,
            "Alarms",
            env_name=env_name,
            thresholds=thresholds,
            function=front_door.function,
            function_timeout=durations.minutes(LAMBDA_TIMEOUT_MINUTES),
            api_name=api_name,
            stage_name=stage_name,
            table=sessions.table,
            endpoints=endpoints,
            alarm_topic=alarm_topic,
        )
        self.dashboard = OperationsDashboard(
            self,
            "Dashboard",
            env_name=env_name,
            thresholds=thresholds,
            function=front_door.function,
            reserved_concurrency=front_door_settings.reserved_concurrency,
            api_name=api_name,
            stage_name=stage_name,
            table=sessions.table,
            endpoints=endpoints,
            alarms=[*self.alarms.alarms, *self.alarms.endpoint_alarms.values()],
        )
