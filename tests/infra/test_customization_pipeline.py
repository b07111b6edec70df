"""The customization pipeline construct in a bare Stack: states, job definitions, IAM scope."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from stacks.constructs.customization_pipeline import CustomizationPipeline
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from tests.infra.conftest import REPO_ROOT, resolve_join


def _build(app: App, *, use_spot: bool) -> Stack:
    stack = Stack(app, "Test")
    bucket = ModelAssetsBucket(stack, "Assets", env_name="test", protect_data=False)
    image = ecr_assets.DockerImageAsset(
        stack,
        "Image",
        directory=str(REPO_ROOT / "container"),
        build_args={"BASE_IMAGE": "example/base:1"},
    )
    CustomizationPipeline(
        stack,
        "Customization",
        env_name="test",
        assets_bucket=bucket,
        base_weights_name="smollm2-135m",
        training_image=image,
        serving_image=image,
        use_spot=use_spot,
    )
    return stack


@pytest.fixture(scope="module", params=[False, True], ids=["on-demand", "spot"])
def synthesized(request: pytest.FixtureRequest) -> tuple[Template, dict[str, Any], Stack]:
    stack = _build(App(), use_spot=request.param)
    template = Template.from_stack(stack)
    [machine] = template.find_resources("AWS::StepFunctions::StateMachine").values()
    definition = json.loads(resolve_join(machine["Properties"]["DefinitionString"]))
    return template, definition, stack


def test_states_run_validate_train_evaluate_register_and_end_there(synthesized) -> None:
    _, definition, _ = synthesized
    states = definition["States"]
    assert definition["StartAt"] == "ValidateData"
    order = ["ValidateData", "Train", "Evaluate", "Register", "Registered"]
    for current, following in itertools.pairwise(order):
        assert states[current]["Next"] == following, current
    assert states["Registered"]["End"] is True
    assert sorted(states) == sorted(order)
    # The execution's output is what make promote needs.
    output = states["Registered"]["Parameters"]
    assert output["model_package_arn.$"] == "$.package.arn"
    assert output["approval_status"] == "PendingManualApproval"
    assert "/output/model/" in output["weights_uri.$"]


def test_no_state_creates_models_or_touches_endpoints(synthesized) -> None:
    template, definition, _ = synthesized
    text = json.dumps(definition).lower()
    for action in ("updateendpoint", "createendpoint", 'createmodel"', "createendpointconfig"):
        assert action not in text, action
    actions = {
        a.lower() for statement in _statements(template) for a in _as_list(statement["Action"])
    }
    sagemaker = {a for a in actions if a.startswith("sagemaker:")}
    assert sagemaker == {
        "sagemaker:createprocessingjob",
        "sagemaker:describeprocessingjob",
        "sagemaker:stopprocessingjob",
        "sagemaker:createtrainingjob",
        "sagemaker:describetrainingjob",
        "sagemaker:stoptrainingjob",
        "sagemaker:addtags",
        "sagemaker:createmodelpackage",
    }


def test_jobs_wait_for_completion_and_run_our_entrypoints(synthesized) -> None:
    _, definition, _ = synthesized
    states = definition["States"]
    assert states["ValidateData"]["Resource"].endswith(
        ":states:::sagemaker:createProcessingJob.sync"
    )
    assert states["Train"]["Resource"].endswith(":states:::sagemaker:createTrainingJob.sync")
    assert states["Evaluate"]["Resource"].endswith(":states:::sagemaker:createProcessingJob.sync")
    validate = states["ValidateData"]["Parameters"]["AppSpecification"]
    assert validate["ContainerEntrypoint"] == ["python3", "-m", "customize", "prepare", "split"]
    assert "$.mode" in validate["ContainerArguments.$"]
    evaluate = states["Evaluate"]["Parameters"]["AppSpecification"]
    assert evaluate["ContainerEntrypoint"] == ["python3", "-m", "customize", "evaluate"]
    assert "'--require-improvement'" in evaluate["ContainerArguments.$"]
    training = states["Train"]["Parameters"]
    assert training["AlgorithmSpecification"]["ContainerEntrypoint"] == [
        "python3",
        "-m",
        "customize.train",
    ]
    names = {metric["Name"] for metric in training["AlgorithmSpecification"]["MetricDefinitions"]}
    assert names == {"train_loss", "validation_loss", "tokens_per_second"}
    assert training["TrainingJobName.$"].startswith(
        "States.Format('chatbot-test-cust-{}-train', $.run_id"
    )
    channels = {channel["ChannelName"] for channel in training["InputDataConfig"]}
    assert channels == {"train", "validation", "model"}
    assert training["OutputDataConfig"]["CompressionType"] == "NONE"


def test_spot_training_checkpoints_only_when_enabled(synthesized) -> None:
    _, definition, stack = synthesized
    training = definition["States"]["Train"]["Parameters"]
    pipeline = stack.node.find_child("Customization")
    assert isinstance(pipeline, CustomizationPipeline)
    if pipeline.use_spot:
        assert training["EnableManagedSpotTraining"] is True
        assert training["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
        assert "checkpoints" in training["CheckpointConfig"]["S3Uri.$"]
        assert training["HyperParameters.$"] == (
            'States.JsonMerge(States.StringToJson(\'\\{"checkpoint_steps": "50"\\}\'), '
            "$.hyperparameters, false)"
        )
        stopping = training["StoppingCondition"]
        assert stopping["MaxWaitTimeInSeconds"] == 2 * stopping["MaxRuntimeInSeconds"]
    else:
        assert "EnableManagedSpotTraining" not in training
        assert training["HyperParameters.$"] == "$.hyperparameters"
        assert "MaxWaitTimeInSeconds" not in training["StoppingCondition"]


def test_registration_carries_metrics_and_the_uncompressed_weights(synthesized) -> None:
    template, definition, _ = synthesized
    states = definition["States"]
    register = states["Register"]["Parameters"]
    assert register["ModelPackageGroupName"] == "chatbot-test-chat"
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert (
        "evaluation/evaluation.json"
        in register["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri.$"]
    )
    [container] = register["InferenceSpecification"]["Containers"]
    source = container["ModelDataSource"]["S3DataSource"]
    assert (source["S3DataType"], source["CompressionType"]) == ("S3Prefix", "None")
    assert "training/chatbot-test-cust-{}-train/output/model/" in source["S3Uri.$"]
    template.has_resource_properties(
        "AWS::SageMaker::ModelPackageGroup", {"ModelPackageGroupName": "chatbot-test-chat"}
    )


def _statements(template: Template) -> list[dict[str, Any]]:
    result = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            result.append(statement)
    return result


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_state_machine_role_is_scoped(synthesized) -> None:
    template, _, _ = synthesized
    sagemaker_resources: list[str] = []
    for statement in _statements(template):
        actions = _as_list(statement["Action"])
        if any(action.lower().startswith("sagemaker:") for action in actions):
            sagemaker_resources.extend(
                resolve_join(resource) for resource in _as_list(statement["Resource"])
            )
        if "iam:PassRole" in actions:
            assert statement["Condition"] == {
                "StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}
            }
            assert all("Fn::GetAtt" in resource for resource in _as_list(statement["Resource"]))
    assert sagemaker_resources
    for resource in sagemaker_resources:
        assert "*" not in resource or (
            "/chatbot-test-cust-*" in resource or "model-package/chatbot-test-chat/*" in resource
        ), resource


def test_job_role_reads_datasets_and_writes_only_run_outputs(synthesized) -> None:
    template, _, _ = synthesized
    writes: list[str] = []
    for statement in _statements(template):
        actions = _as_list(statement["Action"])
        if any(action.startswith("s3:PutObject") for action in actions):
            writes.extend(resolve_join(resource) for resource in _as_list(statement["Resource"]))
    assert writes == [
        "arn:<AWS::Partition>:s3:::chatbot-test-assets-<AWS::AccountId>-<AWS::Region>/customization/runs/*"
    ]


@pytest.mark.slow
def test_cdk_nag_reports_no_unacknowledged_finding(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path / "out"))
    _build(app, use_spot=True)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # raises ValidationFailed, naming the rule, on any unacknowledged finding


def test_customization_stack_builds_the_jobs_image_and_pipeline(tmp_path: Path) -> None:
    from stacks.customization_stack import CustomizationStack

    app = App(outdir=str(tmp_path / "out"))
    shared = _build(app, use_spot=False)
    image = shared.node.find_child("Image")
    assets = shared.node.find_child("Assets")
    assert isinstance(image, ecr_assets.DockerImageAsset)
    assert isinstance(assets, ModelAssetsBucket)
    stack = CustomizationStack(
        app,
        "Customization",
        env_name="test2",
        repository_root=REPO_ROOT,
        base_image="example/base:1",
        assets_bucket=assets,
        base_weights_name="smollm2-135m",
        serving_image=image,
        use_spot=True,
    )
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::StepFunctions::StateMachine", 1)
    template.has_resource_properties(
        "AWS::StepFunctions::StateMachine", {"StateMachineName": "chatbot-test2-customization"}
    )
    app.synth()
    manifest = json.loads((tmp_path / "out" / "Customization.assets.json").read_text())
    [source] = [
        image["source"]
        for image in manifest["dockerImages"].values()
        if image["source"].get("dockerFile") == "customize/Dockerfile"
    ]
    assert source["dockerBuildArgs"] == {"BASE_IMAGE": "example/base:1"}
    staged = tmp_path / "out" / source["directory"]
    assert sorted(path.name for path in staged.iterdir()) == [
        "contracts",
        "customize",
        "requirements",
    ]
    assert sorted(path.name for path in (staged / "requirements").iterdir()) == [
        "customize-gpu.txt",
        "customize.txt",
    ]
    assert sorted(path.name for path in (staged / "contracts").iterdir()) == [
        "chatbot_contracts",
        "pyproject.toml",
    ]
    assert (staged / "contracts" / "chatbot_contracts" / "training.py").is_file()
    assert (staged / "customize" / "train.py").is_file()
    assert not list(staged.rglob("__pycache__"))
