"""Hosting modes: impossible combinations refused, and the templates per mode and environment."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from stacks.config import ENVIRONMENTS_CONTEXT_KEY, ConfigError, EnvironmentConfig, load_environment
from stacks.constructs.component_scaling import (
    COPY_COUNT_DIMENSION,
    NO_CAPACITY_METRIC,
    ComponentScaling,
)
from stacks.constructs.inference_component import InferenceComponentEndpoint
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.serving_artifacts import ServingArtifacts
from tests.infra.conftest import REPO_ROOT, Synthesized


def _environment(context: dict[str, Any], env: str, **changes: Any) -> dict[str, Any]:
    """A copy of the context with ``changes`` (dotted paths) applied to ``env``."""
    changed = copy.deepcopy(context)
    for path, value in changes.items():
        node = changed[ENVIRONMENTS_CONTEXT_KEY][env]
        *parents, leaf = path.split("__")
        for part in parents:
            node = node[part]
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return changed


def _refused(context: dict[str, Any], env: str, field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_environment(context, env)
    message = str(raised.value)
    assert f"environment {env!r}: " in message
    assert field in message
    assert reason in message


def _resources(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


# --- configuration --------------------------------------------------------------------------


def test_environments_pick_their_hosting(cdk_json_context: dict[str, Any]) -> None:
    dev = load_environment(cdk_json_context, "dev")
    staging = load_environment(cdk_json_context, "staging")
    prod = load_environment(cdk_json_context, "prod")
    assert dev.hosting.mode == "inference_components"
    assert dev.hosting.scale_to_zero is not None
    assert dev.hosting.scale_to_zero.idle_minutes == 30
    assert dev.hosting.scale_to_zero.off_hours is None
    assert dev.chat.component is not None
    assert dev.chat.component.min_copies == 0
    assert staging.hosting.mode == "inference_components"
    assert staging.hosting.scale_to_zero is not None
    assert staging.hosting.scale_to_zero.off_hours is not None
    assert staging.chat.component is not None
    assert staging.chat.component.min_copies == 1
    assert prod.hosting.mode == "endpoints"
    assert prod.hosting.scale_to_zero is None


def test_hosting_defaults_to_plain_endpoints(cdk_json_context: dict[str, Any]) -> None:
    context = _environment(cdk_json_context, "prod", hosting=None)
    assert load_environment(context, "prod").hosting.mode == "endpoints"


def test_compute_requirements_come_from_catalog_and_tensor_parallel_degree(
    cdk_json_context: dict[str, Any],
) -> None:
    staging = load_environment(cdk_json_context, "staging")
    # 20B chat: TP 4 on ml.g5.12xlarge (4 GPUs, 192 GiB): the whole instance, less 10 %.
    assert staging.chat.accelerators_per_copy == 4
    assert staging.chat.copies_per_instance == 1
    assert staging.chat.memory_per_copy_mb == int(192 * 1024 * 0.9)
    # Moderation on ml.g5.2xlarge (1 GPU, 32 GiB).
    assert staging.moderation.accelerators_per_copy == 1
    assert staging.moderation.memory_per_copy_mb == int(32 * 1024 * 0.9)


def test_a_copy_may_take_more_gpus_than_its_tensor_parallel_degree(
    cdk_json_context: dict[str, Any],
) -> None:
    context = _environment(
        cdk_json_context,
        "staging",
        moderation__instance_type="ml.g5.12xlarge",
        moderation__component__accelerators_per_copy=2,
        moderation__component__max_copies=4,
    )
    moderation = load_environment(context, "staging").moderation
    assert (moderation.copies_per_instance, moderation.instances_for(4)) == (2, 2)
    assert moderation.memory_per_copy_mb == int(192 * 1024 / 2 * 0.9)


def test_zero_minimum_with_plain_endpoints_is_refused(cdk_json_context: dict[str, Any]) -> None:
    context = _environment(cdk_json_context, "prod", chat__scaling__min_instances=0)
    _refused(context, "prod", "chat.scaling.min_instances", "needs hosting.mode")


def test_scale_to_zero_with_plain_endpoints_is_refused(cdk_json_context: dict[str, Any]) -> None:
    context = _environment(
        cdk_json_context,
        "prod",
        hosting={"mode": "endpoints", "scale_to_zero": {"idle_minutes": 30}},
    )
    _refused(context, "prod", "hosting.scale_to_zero", "plain endpoints cannot scale to zero")


def test_tensor_parallel_degree_above_the_copys_accelerators_is_refused(
    cdk_json_context: dict[str, Any],
) -> None:
    context = _environment(cdk_json_context, "staging", chat__component__accelerators_per_copy=2)
    _refused(context, "staging", "component.accelerators_per_copy", "tensor_parallel_degree 4")


def test_copy_needing_more_gpus_than_the_instance_is_refused(
    cdk_json_context: dict[str, Any],
) -> None:
    context = _environment(cdk_json_context, "dev", chat__component__accelerators_per_copy=2)
    _refused(context, "dev", "component.accelerators_per_copy", "ml.g5.2xlarge has 1")


def test_copies_times_accelerators_above_the_instances_gpus_is_refused(
    cdk_json_context: dict[str, Any],
) -> None:
    context = _environment(
        cdk_json_context, "dev", chat__component__initial_copies=2, chat__component__max_copies=2
    )
    _refused(context, "dev", "component.initial_copies", "2 copies x 1 GPU(s) = 2 GPUs")


@pytest.mark.parametrize(
    ("env", "changes", "field", "reason"),
    [
        (
            "dev",
            {"hosting": {"mode": "endpoints"}},
            "chat.component",
            "only with hosting.mode 'inference_components'",
        ),
        ("dev", {"chat__component": None}, "chat.component", "required with hosting.mode"),
        (
            "staging",
            {
                "chat__scaling": {
                    "min_instances": 1,
                    "max_instances": 2,
                    "target_concurrent_requests": 8,
                    "scale_in_cooldown_s": 900,
                    "scale_out_cooldown_s": 300,
                }
            },
            "chat.scaling",
            "set component.min_copies/max_copies instead",
        ),
        (
            "dev",
            {"hosting__scale_to_zero": None},
            "chat.component.min_copies",
            "0 needs hosting.scale_to_zero",
        ),
        ("staging", {"chat__component__min_copies": 0}, "chat.component.min_copies", "off_hours"),
        (
            "dev",
            {"chat__component__initial_copies": 0},
            "chat.component.initial_copies",
            "greater than or equal to 1",
        ),
        ("dev", {"chat__component__max_copies": 0}, "chat.component.max_copies", "greater than"),
        ("dev", {"hosting__mode": "serverless"}, "hosting.mode", "inference_components"),
        (
            "dev",
            {"hosting__scale_to_zero__idle_minutes": 2},
            "hosting.scale_to_zero.idle_minutes",
            "greater than or equal to 5",
        ),
        (
            "staging",
            {"hosting__scale_to_zero__off_hours__sleep_cron": "19:00"},
            "hosting.scale_to_zero.off_hours.sleep_cron",
            "pattern",
        ),
    ],
)
def test_impossible_hosting_combinations_are_refused(
    cdk_json_context: dict[str, Any], env: str, changes: dict[str, Any], field: str, reason: str
) -> None:
    _refused(_environment(cdk_json_context, env, **changes), env, field, reason)


# --- templates per environment ---------------------------------------------------------------


def test_dev_hosts_components_that_scale_to_zero(synthesized: Synthesized) -> None:
    inference = synthesized.templates["dev"]["Inference"]
    components = _resources(inference, "AWS::SageMaker::InferenceComponent")
    names = sorted(c["Properties"]["InferenceComponentName"] for c in components.values())
    assert names == ["chatbot-dev-chat", "chatbot-dev-moderation"]
    for component in components.values():
        spec = component["Properties"]["Specification"]
        assert spec["ComputeResourceRequirements"]["NumberOfAcceleratorDevicesRequired"] == 1
        assert component["Properties"]["RuntimeConfig"] == {"CopyCount": 1}
    for config in _resources(inference, "AWS::SageMaker::EndpointConfig").values():
        assert "ExecutionRoleArn" in config["Properties"]
        (variant,) = config["Properties"]["ProductionVariants"]
        assert "ModelName" not in variant
        # One copy at most, and room for the one a rolling update starts beside it.
        assert variant["ManagedInstanceScaling"] == {
            "Status": "ENABLED",
            "MinInstanceCount": 0,
            "MaxInstanceCount": 2,
        }
    targets = _resources(inference, "AWS::ApplicationAutoScaling::ScalableTarget")
    assert len(targets) == 2
    for target in targets.values():
        assert target["Properties"]["ScalableDimension"] == COPY_COUNT_DIMENSION
        assert target["Properties"]["MinCapacity"] == 0
    wake = [
        a["Properties"]
        for a in _resources(inference, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("MetricName") == NO_CAPACITY_METRIC
    ]
    assert len(wake) == 2


def test_wake_alarm_fires_on_a_single_refused_request(synthesized: Synthesized) -> None:
    """Guard: GreaterThanThreshold, or a threshold above 1, and one request never wakes it."""
    for env in ("dev", "staging"):
        inference = synthesized.templates[env]["Inference"]
        alarms = [
            a["Properties"]
            for a in _resources(inference, "AWS::CloudWatch::Alarm").values()
            if a["Properties"].get("MetricName") == NO_CAPACITY_METRIC
        ]
        assert alarms, env
        for alarm in alarms:
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
            assert alarm["Threshold"] == 1
            assert alarm["EvaluationPeriods"] == 1
            assert alarm["Dimensions"][0]["Name"] == "InferenceComponentName"
            policy_id = alarm["AlarmActions"][0]["Ref"]
            step = inference["Resources"][policy_id]["Properties"]
            assert step["StepScalingPolicyConfiguration"]["StepAdjustments"] == [
                {"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}
            ]


def test_staging_sleeps_only_off_hours(synthesized: Synthesized) -> None:
    inference = synthesized.templates["staging"]["Inference"]
    targets = _resources(inference, "AWS::ApplicationAutoScaling::ScalableTarget")
    for target in targets.values():
        props = target["Properties"]
        assert props["MinCapacity"] == 1
        actions = {a["ScheduledActionName"]: a for a in props["ScheduledActions"]}
        sleep = next(a for name, a in actions.items() if "SleepOffHours" in name)
        wake = next(a for name, a in actions.items() if "WakeForWorkingHours" in name)
        assert sleep["ScalableTargetAction"] == {"MinCapacity": 0}
        assert wake["ScalableTargetAction"] == {"MinCapacity": 1}
        assert sleep["Schedule"].startswith("cron(")
        assert sleep["Timezone"] == "America/New_York"
    for config in _resources(inference, "AWS::SageMaker::EndpointConfig").values():
        scaling = config["Properties"]["ProductionVariants"][0]["ManagedInstanceScaling"]
        assert scaling["MinInstanceCount"] == 0


def test_prod_never_reaches_zero(synthesized: Synthesized) -> None:
    inference = synthesized.templates["prod"]["Inference"]
    assert _resources(inference, "AWS::SageMaker::InferenceComponent") == {}
    for target in _resources(inference, "AWS::ApplicationAutoScaling::ScalableTarget").values():
        assert target["Properties"]["MinCapacity"] >= 1
        assert "ScheduledActions" not in target["Properties"]
    for config in _resources(inference, "AWS::SageMaker::EndpointConfig").values():
        for variant in config["Properties"]["ProductionVariants"]:
            assert variant["InitialInstanceCount"] >= 1
            assert "ManagedInstanceScaling" not in variant
    assert NO_CAPACITY_METRIC not in json.dumps(inference)


def test_front_door_names_the_components_only_where_hosted_so(synthesized: Synthesized) -> None:
    def environment(env: str) -> dict[str, Any]:
        functions = _resources(synthesized.templates[env]["FrontDoor"], "AWS::Lambda::Function")
        (function,) = functions.values()
        variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
        return variables

    dev, prod = environment("dev"), environment("prod")
    assert dev["CHATBOT_CHAT_COMPONENT"] == "chatbot-dev-chat"
    assert dev["CHATBOT_MODERATION_COMPONENT"] == "chatbot-dev-moderation"
    assert dev["CHATBOT_WAKE_RETRY_AFTER_S"] == "300"
    assert environment("staging")["CHATBOT_WAKE_RETRY_AFTER_S"] == "420"
    assert not {k for k in prod if "COMPONENT" in k or "WAKE" in k}


# --- constructs in a bare stack ---------------------------------------------------------------


def _component_stack(config: EnvironmentConfig, root: Path) -> Template:
    stack = Stack(App())
    bucket = ModelAssetsBucket(stack, "Assets", env_name="test", protect_data=False)
    image = ecr_assets.DockerImageAsset(
        stack, "Image", directory=str(REPO_ROOT / "container"), build_args={"BASE_IMAGE": "b:1"}
    )
    source = root / "chat"
    source.mkdir(parents=True)
    (source / "serving.properties").write_text("option.role=chat\n")
    artifacts = ServingArtifacts(
        stack,
        "Artifacts",
        source_dir=source,
        role="chat",
        assets_bucket=bucket,
        weights_prefix=config.chat.model.serving_prefix,
    )
    assert config.chat.component is not None
    component = InferenceComponentEndpoint(
        stack,
        "Chat",
        endpoint_name="chatbot-test-chat",
        settings=config.chat,
        allow_zero_instances=True,
        image=image,
        artifacts=artifacts,
        assets_bucket=bucket,
    )
    ComponentScaling(
        stack,
        "Scaling",
        target=component,
        copies=config.chat.component,
        scale_to_zero=config.hosting.scale_to_zero,
    )
    invoker = iam.Role(stack, "Invoker", assumed_by=iam.AccountRootPrincipal())
    component.grant_invoke(invoker)
    return Template.from_stack(stack)


class TestInferenceComponentEndpoint:
    @pytest.fixture(scope="class")
    @classmethod
    def template(
        cls, cdk_json_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
    ) -> Template:
        config = load_environment(cdk_json_context, "dev")
        return _component_stack(config, tmp_path_factory.mktemp("component"))

    def test_component_rolls_out_one_copy_at_a_time_with_auto_rollback(
        self, template: Template
    ) -> None:
        template.has_resource_properties(
            "AWS::SageMaker::InferenceComponent",
            {
                "InferenceComponentName": "chatbot-test-chat",
                "VariantName": "AllTraffic",
                "Specification": {
                    "ModelName": Match.any_value(),
                    "ComputeResourceRequirements": {
                        "NumberOfAcceleratorDevicesRequired": 1,
                        "MinMemoryRequiredInMb": int(32 * 1024 * 0.9),
                    },
                    "StartupParameters": {
                        "ContainerStartupHealthCheckTimeoutInSeconds": 900,
                        "ModelDataDownloadTimeoutInSeconds": 900,
                    },
                },
                "DeploymentConfig": {
                    "RollingUpdatePolicy": {
                        "MaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                        "WaitIntervalInSeconds": 600,
                        "MaximumExecutionTimeoutInSeconds": 3600,
                        # Not SageMaker's default of every old copy at once: the endpoint's
                        # instance maximum has room for one copy more, not for a second fleet.
                        "RollbackMaximumBatchSize": {"Type": "COPY_COUNT", "Value": 1},
                    },
                    "AutoRollbackConfiguration": {
                        "Alarms": [
                            {"AlarmName": {"Ref": Match.string_like_regexp("Invocation5xx")}},
                            {"AlarmName": {"Ref": Match.string_like_regexp("ModelLatency")}},
                        ]
                    },
                },
            },
        )

    def test_invoke_grant_covers_endpoint_and_component_with_streaming(
        self, template: Template
    ) -> None:
        template.has_resource_properties(
            "AWS::IAM::Policy",
            {
                "Roles": [{"Ref": Match.string_like_regexp("Invoker")}],
                "PolicyDocument": {
                    "Statement": [
                        {
                            "Action": [
                                "sagemaker:InvokeEndpoint",
                                "sagemaker:InvokeEndpointWithResponseStream",
                            ],
                            "Effect": "Allow",
                            "Resource": [
                                {"Ref": Match.string_like_regexp("ChatEndpoint")},
                                {
                                    "Fn::GetAtt": [
                                        Match.string_like_regexp("ChatComponent"),
                                        "InferenceComponentArn",
                                    ]
                                },
                            ],
                        }
                    ]
                },
            },
        )

    def test_idle_component_scales_in_to_zero(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "PolicyType": "StepScaling",
                "StepScalingPolicyConfiguration": {
                    "AdjustmentType": "ExactCapacity",
                    "StepAdjustments": [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}],
                },
            },
        )
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "ComparisonOperator": "LessThanOrEqualToThreshold",
                "Threshold": 0,
                "TreatMissingData": "breaching",
                "Metrics": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Id": "invocations",
                                "MetricStat": Match.object_like({"Period": 30 * 60}),
                            }
                        )
                    ]
                ),
            },
        )
        # Target tracking never scales in on its own: the idle time decides.
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "DisableScaleIn": True,
                        "PredefinedMetricSpecification": {
                            "PredefinedMetricType": (
                                "SageMakerInferenceComponentConcurrentRequestsPerCopyHighResolution"
                            )
                        },
                    }
                ),
            },
        )


def test_the_pipeline_rolls_out_nothing_in_a_components_environment(
    synthesized: Synthesized,
) -> None:
    # Promotion is a reviewed cdk.json change (make promote); the component's own
    # DeploymentConfig rolls it out, never the pipeline.
    customization = json.dumps(synthesized.templates["dev"]["Customization"])
    assert "updateInferenceComponent" not in customization
    assert "updateEndpoint" not in customization
