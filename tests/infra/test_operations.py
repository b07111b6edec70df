"""Operations: roll-outs, alarm topic, alarms, dashboard, tracing; bare stacks and every env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk.assertions import Match, Template

from chatbot_contracts.metrics import METRICS_NAMESPACE, SERVICE_NAME, Metric, dimensions
from stacks.config import load_environment
from stacks.constructs.alarm_topic import AlarmTopic
from stacks.constructs.llm_endpoint import LlmEndpoint
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.serving_artifacts import ServingArtifacts
from tests.infra.conftest import ENVIRONMENTS, REPO_ROOT, Synthesized, resolve_join

ALARM_TYPES = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")


def _resources(template: dict[str, Any], type_name: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template.get("Resources", {}).items() if v["Type"] == type_name}


def _all(synthesized: Synthesized, env: str, type_name: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for stack, template in synthesized.templates[env].items():
        for logical_id, resource in _resources(template, type_name).items():
            found[f"{stack}/{logical_id}"] = resource
    return found


# --- bare stacks ------------------------------------------------------------------------------


def _endpoint_stack(context: dict[str, Any], env: str, root: Path) -> Template:
    config = load_environment(context, env)
    stack = Stack(App())
    bucket = ModelAssetsBucket(stack, "Assets", env_name="test", protect_data=False)
    topic = AlarmTopic(
        stack,
        "AlarmTopic",
        env_name="test",
        notifications=config.operations.notifications,
        protect_data=False,
    )
    image = ecr_assets.DockerImageAsset(
        stack,
        "Image",
        directory=str(REPO_ROOT / "container"),
        build_args={"BASE_IMAGE": "example/base:1"},
    )
    (root / "chat").mkdir(parents=True, exist_ok=True)
    (root / "chat" / "serving.properties").write_text("option.role=chat\n")
    artifacts = ServingArtifacts(
        stack,
        "Artifacts",
        source_dir=root / "chat",
        role="chat",
        assets_bucket=bucket,
        weights_prefix=config.chat.model.serving_prefix,
    )
    LlmEndpoint(
        stack,
        "Chat",
        endpoint_name=f"chatbot-{env}-chat",
        settings=config.chat,
        image=image,
        artifacts=artifacts,
        assets_bucket=bucket,
        operations=config.operations,
        alarm_topic=topic,
    )
    return Template.from_stack(stack)


@pytest.fixture(scope="module")
def endpoint_templates(
    cdk_json_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Template]:
    root = tmp_path_factory.mktemp("operations")
    return {env: _endpoint_stack(cdk_json_context, env, root / env) for env in ("dev", "prod")}


def test_prod_endpoint_rolls_out_canary_with_rollback_alarms(
    endpoint_templates: dict[str, Template],
) -> None:
    template = endpoint_templates["prod"]
    endpoint = next(iter(template.find_resources("AWS::SageMaker::Endpoint").values()))
    config = endpoint["Properties"]["DeploymentConfig"]
    assert config["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 50},
            "WaitIntervalInSeconds": 900,
        },
        "TerminationWaitInSeconds": 900,
        "MaximumExecutionTimeoutInSeconds": 10800,
    }
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    names = {
        alarms[a["AlarmName"]["Ref"]]["Properties"]["AlarmName"]
        for a in config["AutoRollbackConfiguration"]["Alarms"]
    }
    assert names == {
        "chatbot-prod-chat-invocation-5xx",
        "chatbot-prod-chat-model-latency-p90",
        "chatbot-prod-chat-gpu-memory",
    }
    # The rollback alarms exist before the endpoint, and its role may read their state.
    assert set(config_refs(config)) <= set(endpoint.get("DependsOn", []))
    statements = [
        s
        for policy in template.find_resources("AWS::IAM::Policy").values()
        for s in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    describe = [s for s in statements if s["Action"] == "cloudwatch:DescribeAlarms"]
    assert len(describe) == 1
    assert len(describe[0]["Resource"]) == 3


def config_refs(config: dict[str, Any]) -> list[str]:
    """Logical ids of the alarms a DeploymentConfig names."""
    return [a["AlarmName"]["Ref"] for a in config["AutoRollbackConfiguration"]["Alarms"]]


def test_dev_endpoint_rolls_out_all_at_once_with_a_short_bake(
    endpoint_templates: dict[str, Template],
) -> None:
    endpoint_templates["dev"].has_resource_properties(
        "AWS::SageMaker::Endpoint",
        {
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "ALL_AT_ONCE",
                        "WaitIntervalInSeconds": 300,
                    },
                    "TerminationWaitInSeconds": 0,
                    "MaximumExecutionTimeoutInSeconds": 2400,
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": Match.any_value()}]},
            }
        },
    )


def test_gpu_alarms_scale_per_gpu_thresholds_by_the_instance_gpu_count(
    endpoint_templates: dict[str, Template],
) -> None:
    # prod chat: ml.g5.12xlarge, 4 GPUs; the namespace sums them per instance.
    for metric, threshold in (("GPUMemoryUtilization", 98 * 4), ("GPUUtilization", 95 * 4)):
        endpoint_templates["prod"].has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "/aws/sagemaker/Endpoints",
                "MetricName": metric,
                "Statistic": "Average",
                "Threshold": threshold,
                "EvaluationPeriods": 3,  # 15 minutes of 5-minute periods
                "Dimensions": Match.array_with(
                    [{"Name": "EndpointName", "Value": "chatbot-prod-chat"}]
                ),
            },
        )
    # dev chat: ml.g5.2xlarge, 1 GPU.
    endpoint_templates["dev"].has_resource_properties(
        "AWS::CloudWatch::Alarm", {"MetricName": "GPUMemoryUtilization", "Threshold": 98}
    )


def test_instance_count_alarm_only_where_the_endpoint_scales(
    endpoint_templates: dict[str, Template],
) -> None:
    endpoint_templates["prod"].has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "chatbot-prod-chat-instances-at-max",
            "Namespace": "/aws/sagemaker/Endpoints",
            "MetricName": "CPUUtilization",
            "Statistic": "SampleCount",
            "Period": 60,
            "Threshold": 8,  # prod chat scaling.max_instances
            "EvaluationPeriods": 30,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        },
    )
    dev_alarms = endpoint_templates["dev"].find_resources("AWS::CloudWatch::Alarm")
    assert len(dev_alarms) == 4  # dev does not scale: no instances-at-max alarm


def test_every_endpoint_alarm_notifies_the_topic_on_alarm_and_ok(
    endpoint_templates: dict[str, Template],
) -> None:
    template = endpoint_templates["prod"]
    topic = next(iter(template.find_resources("AWS::SNS::Topic")))
    alarms = template.find_resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic}]
        assert alarm["Properties"]["OKActions"] == [{"Ref": topic}]


def test_alarm_topic_is_encrypted_tls_only_and_subscribed(
    endpoint_templates: dict[str, Template],
) -> None:
    template = endpoint_templates["prod"]
    topic_id, topic = next(iter(template.find_resources("AWS::SNS::Topic").items()))
    assert "KmsMasterKeyId" in topic["Properties"]
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "email", "Endpoint": "chatbot-prod-oncall@example.com"},
    )
    policy = next(iter(template.find_resources("AWS::SNS::TopicPolicy").values()))
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s["Effect"] == "Deny"]
    assert deny
    assert deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    publish = [s for s in statements if s["Effect"] == "Allow"]
    assert publish[0]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    key = next(
        k
        for k in template.find_resources("AWS::KMS::Key").values()
        if "alarm topic" in k["Properties"].get("Description", "")
    )
    key_statements = key["Properties"]["KeyPolicy"]["Statement"]
    for_cloudwatch = [
        s for s in key_statements if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}
    ]
    assert for_cloudwatch
    assert "kms:GenerateDataKey*" in for_cloudwatch[0]["Action"]
    assert topic_id


def test_https_subscription_from_config(
    cdk_json_context: dict[str, Any],
) -> None:
    import copy

    from stacks.config import ENVIRONMENTS_CONTEXT_KEY

    context = copy.deepcopy(cdk_json_context)
    notifications = context[ENVIRONMENTS_CONTEXT_KEY]["dev"]["operations"]["notifications"]
    notifications["https_endpoints"] = ["https://hooks.example.com/chatbot"]
    config = load_environment(context, "dev")
    stack = Stack(App())
    AlarmTopic(
        stack,
        "Topic",
        env_name="dev",
        notifications=config.operations.notifications,
        protect_data=False,
    )
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::SNS::Subscription",
        {"Protocol": "https", "Endpoint": "https://hooks.example.com/chatbot"},
    )
    template.resource_count_is("AWS::SNS::Subscription", 2)


# --- every environment: guards ----------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_guard_every_alarm_notifies_on_alarm_and_ok(synthesized: Synthesized, env: str) -> None:
    alarms = {}
    for type_name in ALARM_TYPES:
        alarms.update(_all(synthesized, env, type_name))
    assert len(alarms) >= 19  # dev: 4 per endpoint (no scaling), 10 service, 1 composite
    missing = [
        name
        for name, alarm in alarms.items()
        if not alarm["Properties"].get("AlarmActions") or not alarm["Properties"].get("OKActions")
    ]
    assert missing == []
    # Every alarm notifies the Stateful stack's topic (a Ref there, an import elsewhere); the
    # scale-to-zero alarms also drive their scaling policies.
    topic_actions = {
        json.dumps(action)
        for alarm in alarms.values()
        for action in alarm["Properties"]["AlarmActions"] + alarm["Properties"]["OKActions"]
        if "AlarmTopic" in json.dumps(action)
    }
    assert len(topic_actions) <= 2
    for name, alarm in alarms.items():
        for key in ("AlarmActions", "OKActions"):
            assert any("AlarmTopic" in json.dumps(a) for a in alarm["Properties"][key]), name


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_guard_every_endpoint_has_a_deployment_config_with_rollback(
    synthesized: Synthesized, env: str
) -> None:
    endpoints = _all(synthesized, env, "AWS::SageMaker::Endpoint")
    assert len(endpoints) == 2
    alarm_ids = set(_resources(synthesized.templates[env]["Inference"], "AWS::CloudWatch::Alarm"))
    components = _all(synthesized, env, "AWS::SageMaker::InferenceComponent")
    if components:
        # Inference components roll out through their own DeploymentConfig (rolling, copy by
        # copy) with auto-rollback on their alarms; the endpoint config then names no model.
        assert len(components) == 2
        for name, component in components.items():
            config = component["Properties"]["DeploymentConfig"]
            assert config["RollingUpdatePolicy"]["MaximumBatchSize"]["Value"] >= 1, name
            rollback = config["AutoRollbackConfiguration"]["Alarms"]
            assert rollback, name
            assert {a["AlarmName"]["Ref"] for a in rollback} <= alarm_ids
        return
    for name, endpoint in endpoints.items():
        config = endpoint["Properties"].get("DeploymentConfig")
        assert config, name
        policy = config["BlueGreenUpdatePolicy"]
        assert policy["TrafficRoutingConfiguration"]["Type"] in ("ALL_AT_ONCE", "CANARY", "LINEAR")
        assert policy["MaximumExecutionTimeoutInSeconds"] >= 600
        rollback = config["AutoRollbackConfiguration"]["Alarms"]
        assert rollback
        assert {a["AlarmName"]["Ref"] for a in rollback} <= alarm_ids


def test_prod_has_every_alarm_the_issue_lists(synthesized: Synthesized) -> None:
    names = {
        alarm["Properties"].get("AlarmName") or alarm["Properties"].get("CompositeAlarmName")
        for type_name in ALARM_TYPES
        for alarm in _all(synthesized, "prod", type_name).values()
    }
    expected = {
        f"chatbot-prod-{role}-{kind}"
        for role in ("chat", "moderation")
        for kind in (
            "invocation-5xx",
            "model-latency-p90",
            "gpu-memory",
            "gpu-utilization",
            "instances-at-max",
        )
    } | {
        f"chatbot-prod-{name}"
        for name in (
            "front-door-errors",
            "front-door-throttles",
            "front-door-duration",
            "api-5xx",
            "api-latency-p99",
            "sessions-throttles",
            "sessions-system-errors",
            "ttft-p99",
            "moderation-failed-closed",
            "content-filter-spike",
            "unhealthy",
        )
    }
    assert names == expected


def test_composite_alarm_watches_failures_across_stacks_by_name(synthesized: Synthesized) -> None:
    composite = next(
        iter(_resources(synthesized.templates["prod"]["Monitoring"], ALARM_TYPES[1]).values())
    )
    rule = resolve_join(composite["Properties"]["AlarmRule"])
    for name in ("chatbot-prod-chat-invocation-5xx", "chatbot-prod-moderation-model-latency-p90"):
        assert f':alarm:{name}")' in rule
    assert "Fn::ImportValue" not in json.dumps(composite["Properties"]["AlarmRule"])
    assert "gpu-utilization" not in rule  # capacity warnings do not make the service unhealthy


def test_front_door_alarm_thresholds_come_from_config(synthesized: Synthesized) -> None:
    template = Template.from_json(synthesized.templates["prod"]["Monitoring"])
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "chatbot-prod-front-door-duration",
            "MetricName": "Duration",
            "Namespace": "AWS/Lambda",
            "Statistic": "Maximum",
            "Threshold": 0.9 * 15 * 60 * 1000,
        },
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "chatbot-prod-api-latency-p99",
            "Namespace": "AWS/ApiGateway",
            "ExtendedStatistic": "p99",
            "Dimensions": Match.array_with([{"Name": "ApiName", "Value": "chatbot-prod"}]),
            "Threshold": 300000,
        },
    )
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": "chatbot-prod-sessions-system-errors",
            "Metrics": Match.array_with(
                [Match.object_like({"Expression": Match.string_like_regexp("m|expr")})]
            ),
        },
    )


# --- dashboard and metric contract ------------------------------------------------------------


def _dashboard_body(synthesized: Synthesized, env: str) -> dict[str, Any]:
    dashboards = _resources(synthesized.templates[env]["Monitoring"], "AWS::CloudWatch::Dashboard")
    assert len(dashboards) == 1
    dashboard = next(iter(dashboards.values()))["Properties"]
    assert dashboard["DashboardName"] == f"chatbot-{env}"
    body: dict[str, Any] = json.loads(resolve_join(dashboard["DashboardBody"]))
    return body


def _dashboard_metrics(body: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for widget in body["widgets"]:
        for row in widget.get("properties", {}).get("metrics", []):
            if not isinstance(row[0], str):
                continue  # a math expression; the metrics it uses are rows of their own
            namespace, name, *rest = row
            pairs = [item for item in rest if isinstance(item, str)]
            found.append((namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True))))
    return found


def _alarm_metrics(template: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    found = []
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        stats = (
            [props]
            if "MetricName" in props
            else [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
        )
        for stat in stats:
            dims = {d["Name"]: d["Value"] for d in stat.get("Dimensions", [])}
            found.append((stat["Namespace"], stat["MetricName"], dims))
    return found


def _emitted_by_front_door(capsys: pytest.CaptureFixture[str]) -> set[tuple[str, str, str]]:
    """(namespace, name, dimensions) of what the front door's metrics code really writes."""
    from front_door.observability import RequestMetrics

    capsys.readouterr()
    metrics = RequestMetrics()
    for metric in Metric:
        metrics.add(metric, metric.unit, 1)
    metrics.flush()
    emitted = set()
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            dims = {name: document[name] for group in directive["Dimensions"] for name in group}
            for metric in directive["Metrics"]:
                emitted.add((directive["Namespace"], metric["Name"], json.dumps(dims)))
    return emitted


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_front_door_metric_read_is_one_the_front_door_emits(
    synthesized: Synthesized, env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    emitted = _emitted_by_front_door(capsys)
    assert len(emitted) == len(Metric)
    read = [
        (namespace, name, json.dumps(dims))
        for namespace, name, dims in _dashboard_metrics(_dashboard_body(synthesized, env))
        + [m for t in synthesized.templates[env].values() for m in _alarm_metrics(t)]
        if namespace == METRICS_NAMESPACE
    ]
    assert {name for _, name, _ in read} == {m.value for m in Metric}
    assert set(read) <= emitted
    assert all(json.loads(dims) == dimensions(SERVICE_NAME) for _, _, dims in read)


def test_dashboard_rows_cover_what_an_operator_asks(synthesized: Synthesized) -> None:
    body = _dashboard_body(synthesized, "prod")
    titles = [w["properties"].get("title", "") for w in body["widgets"]]
    for title in (
        "Requests",
        "Errors by status",
        "Time to first token (ms)",
        "Tokens out per second",
        "Moderation blocks",
        "Sessions created, content-filter endings",
        "Lambda concurrency vs reserved",
        "chatbot-prod-chat: invocations",
        "chatbot-prod-moderation: model and overhead latency (us)",
        "chatbot-prod-chat: GPU utilization and memory (% x 4 GPU)",
        "chatbot-prod-moderation: instances",
        "Sessions table: consumed capacity",
        "Sessions table: throttles and system errors",
        "Alarm status",
    ):
        assert title in titles
    concurrency = body["widgets"][titles.index("Lambda concurrency vs reserved")]
    assert concurrency["properties"]["annotations"]["horizontal"][0]["value"] == 100
    status = body["widgets"][titles.index("Alarm status")]
    assert len(status["properties"]["alarms"]) == 21


# --- tracing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_front_door_traces_actively_on_function_and_stage(
    synthesized: Synthesized, env: str
) -> None:
    template = Template.from_json(synthesized.templates[env]["FrontDoor"])
    template.has_resource_properties("AWS::Lambda::Function", {"TracingConfig": {"Mode": "Active"}})
    template.has_resource_properties("AWS::ApiGateway::Stage", {"TracingEnabled": True})
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "POWERTOOLS_SERVICE_NAME": SERVICE_NAME,
                        "POWERTOOLS_METRICS_NAMESPACE": METRICS_NAMESPACE,
                    }
                )
            }
        },
    )
