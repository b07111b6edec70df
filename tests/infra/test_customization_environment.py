"""The customization stack as wired in each environment's Stage, on the shared synth."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stacks.config import load_environment
from tests.infra.conftest import ENVIRONMENTS, Synthesized, resolve_join


def _enabled(cdk_json_context: dict[str, Any]) -> list[str]:
    return [
        env
        for env in ENVIRONMENTS
        if load_environment(cdk_json_context, env).customization is not None
    ]


def _definition(synthesized: Synthesized, env: str) -> dict[str, Any]:
    resources = synthesized.templates[env]["Customization"]["Resources"]
    [machine] = [r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine"]
    definition: dict[str, Any] = json.loads(resolve_join(machine["Properties"]["DefinitionString"]))
    return definition


def _statements(synthesized: Synthesized, env: str) -> list[tuple[str, dict[str, Any]]]:
    """(policy's role logical id, statement) of every IAM policy in ``env``'s stack."""
    found = []
    for resource in synthesized.templates[env]["Customization"]["Resources"].values():
        if resource["Type"] == "AWS::IAM::Policy":
            [role] = resource["Properties"]["Roles"]
            for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
                found.append((role["Ref"], statement))
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_customization_stack_follows_the_config(
    synthesized: Synthesized, cdk_json_context: dict[str, Any]
) -> None:
    enabled = _enabled(cdk_json_context)
    assert enabled == ["dev", "staging", "prod"]
    for env in ENVIRONMENTS:
        assert ("Customization" in synthesized.templates[env]) == (env in enabled), env


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_state_machine_runs_the_configured_jobs(
    synthesized: Synthesized, cdk_json_context: dict[str, Any], env: str
) -> None:
    config = load_environment(cdk_json_context, env)
    assert config.customization is not None
    states = _definition(synthesized, env)["States"]
    assert _definition(synthesized, env)["StartAt"] == "ValidateData"
    training = states["Train"]["Parameters"]
    assert training["ResourceConfig"]["InstanceType"] == config.customization.training_instance_type
    evaluation = states["Evaluate"]["Parameters"]["ProcessingResources"]["ClusterConfig"]
    assert evaluation["InstanceType"] == config.customization.evaluation_instance_type
    assert training.get("EnableManagedSpotTraining", False) is config.customization.use_spot
    assert ("CheckpointConfig" in training) is config.customization.use_spot
    # The base model is the environment's chat model; the run ends at a registered package.
    [base] = [c for c in training["InputDataConfig"] if c["ChannelName"] == "model"]
    base_uri = base["DataSource"]["S3DataSource"]["S3Uri"]
    assert base_uri.endswith(f"/models/{config.chat.model.weights_name}/")
    assert f"chatbot-{env}-assets-" in base_uri
    assert "Registered" in states
    assert states["Register"]["Parameters"]["ModelPackageGroupName"] == f"chatbot-{env}-chat"
    assert training["TrainingJobName.$"].startswith(
        f"States.Format('chatbot-{env}-cust-{{}}-train'"
    )
    # Every run gets the environment's training settings (the execution input overrides).
    merged = training["HyperParameters.$"]
    assert merged.startswith("States.JsonMerge(States.StringToJson('")
    assert merged.endswith("'), $.hyperparameters, false)")
    settings = json.loads(merged.split("'")[1].replace("\\{", "{").replace("\\}", "}"))
    assert settings == {
        "checkpoint_steps": "50",
        **config.customization.training.hyperparameters(),
    }
    # Evaluation generates with vLLM as the chat endpoint serves it.
    arguments = states["Evaluate"]["Parameters"]["AppSpecification"]["ContainerArguments.$"]
    tp = config.chat.tensor_parallel_degree
    assert f"'--engine', 'vllm', '--tensor-parallel-degree', '{tp}'" in arguments
    assert f"'--max-model-len', '{config.chat.model.max_model_len}'" in arguments


@pytest.mark.parametrize("env", ["dev"])
def test_roles_stay_inside_the_environment(
    synthesized: Synthesized, cdk_json_context: dict[str, Any], env: str
) -> None:
    weights = load_environment(cdk_json_context, env).chat.model.weights_name
    bucket = f"arn:<AWS::Partition>:s3:::chatbot-{env}-assets-<AWS::AccountId>-<AWS::Region>"
    s3_resources: set[str] = set()
    sagemaker_resources: set[str] = set()
    for _, statement in _statements(synthesized, env):
        actions = _as_list(statement["Action"])
        resources = [resolve_join(r) for r in _as_list(statement["Resource"])]
        if any(a.startswith("s3:") for a in actions):
            s3_resources.update(resources)
        if any(a.lower().startswith("sagemaker:") for a in actions):
            sagemaker_resources.update(r for r in resources if r.startswith("arn:"))
        if any(a.startswith(("s3:Put", "s3:Delete")) for a in actions):
            assert resources == [f"{bucket}/customization/runs/*"], statement
    assert s3_resources == {
        bucket,
        f"{bucket}/models/{weights}/*",
        f"{bucket}/customization/datasets/*",
        f"{bucket}/customization/runs/*",
    }
    assert sagemaker_resources
    for resource in sagemaker_resources:
        assert f"/chatbot-{env}-" in resource or f":model-package-group/chatbot-{env}-" in resource
        assert "*" not in resource or resource.endswith(
            (f"/chatbot-{env}-cust-*", f"/chatbot-{env}-chat/*")
        ), resource


@pytest.mark.parametrize("env", ["dev"])
def test_stack_deploys_after_stateful_and_inference(synthesized: Synthesized, env: str) -> None:
    manifest = json.loads(
        (synthesized.outdir / f"assembly-chatbot-{env}" / "manifest.json").read_text()
    )
    stacks = {
        a["displayName"].split("/")[-1]: (name, a)
        for name, a in manifest["artifacts"].items()
        if a["type"] == "aws:cloudformation:stack"
    }
    ids = {stack: name for stack, (name, _) in stacks.items()}
    customization = stacks["Customization"][1]
    assert {ids["Stateful"], ids["Inference"]} <= set(customization["dependencies"])
    assert customization["environment"] == stacks["Inference"][1]["environment"]
    images: dict[str, Any] = {}
    for artifact in manifest["artifacts"].values():
        if (
            artifact["type"] == "cdk:asset-manifest"
            and "Customization" in artifact["properties"]["file"]
        ):
            path = synthesized.outdir / f"assembly-chatbot-{env}" / artifact["properties"]["file"]
            images.update(json.loads(path.read_text())["dockerImages"])
    [jobs] = images.values()
    assert jobs["source"]["dockerFile"] == "customize/Dockerfile"
    assert jobs["source"]["dockerBuildArgs"]["BASE_IMAGE"].startswith(
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.30.0-gpu"
    )
