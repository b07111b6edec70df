"""Whole-environment checks on the shared synth: snapshot, cdk-nag, cfn-lint, determinism."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file  # type: ignore[import-untyped, unused-ignore]
from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.json import JSONSnapshotExtension

from tests.infra.conftest import ENVIRONMENTS, REPO_ROOT, Synthesized, mask_hashes, synthesize_all

STACKS = ("Stateful", "Inference", "FrontDoor", "Monitoring")
# Every environment customizes its chat model (cdk.json; docs/customize.md); staging and prod
# run in a private network (cdk.json `network`), dev on public networking.
STACKS_BY_ENV = {
    "dev": (*STACKS, "Customization"),
    "staging": (*STACKS, "Customization", "Network"),
    "prod": (*STACKS, "Customization", "Network"),
}


def _resources(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_snapshot(synthesized: Synthesized, snapshot: SnapshotAssertion, env: str) -> None:
    masked = mask_hashes(synthesized.templates[env])
    assert "<ASSET-HASH>" in json.dumps(masked)
    assert masked == snapshot(extension_class=JSONSnapshotExtension)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_stack_is_present(synthesized: Synthesized, env: str) -> None:
    assert sorted(synthesized.templates[env]) == sorted(STACKS_BY_ENV[env])


def _acknowledgements(synthesized: Synthesized, env: str) -> list[tuple[str, str, str]]:
    """(construct path, rule id, reason) of every acknowledgement recorded in ``env``."""
    found: list[tuple[str, str, str]] = []
    for path in (synthesized.outdir / f"assembly-chatbot-{env}").glob("*.metadata.json"):
        for construct, entries in json.loads(path.read_text()).items():
            for entry in entries:
                if entry["type"] == "aws:cdk:acknowledged-rules":
                    found.extend((construct, rule, why) for rule, why in entry["data"].items())
    return found


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cdk_nag_reports_no_unacknowledged_finding(synthesized: Synthesized, env: str) -> None:
    # Synth raises on any unacknowledged finding; the report must carry none for this stage.
    stage = f"chatbot-{env}/"
    for plugin in synthesized.validation_report.get("pluginReports", []):
        paths = [c["constructPath"] for v in plugin["violations"] for c in v["violatingConstructs"]]
        assert [p for p in paths if p.startswith(stage)] == [], plugin["pluginName"]
    acknowledged = _acknowledgements(synthesized, env)
    nag = [(path, rule, why) for path, rule, why in acknowledged if rule.startswith("AwsSolutions")]
    assert all(rule.startswith("AwsSolutions::AwsSolutions-") for _, rule, _ in nag)
    assert all(len(why) > 40 for _, _, why in nag)
    by_rule: dict[str, set[str]] = {}
    for path, rule, _ in nag:
        by_rule.setdefault(rule, set()).add(path)
    # Endpoints, or inference-component endpoints (dev, staging): one NVMe waiver per role.
    hosted = "Endpoint" if env == "prod" else "Component"
    assert by_rule["AwsSolutions::AwsSolutions-SM2"] == {
        f"/chatbot-{env}/Inference/Chat{hosted}/EndpointConfig",
        f"/chatbot-{env}/Inference/Moderation{hosted}/EndpointConfig",
    }
    # Only IAM-authorized environments waive the Cognito-authorizer rule, method by method.
    cognito_waivers = by_rule.get("AwsSolutions::AwsSolutions-COG4", set())
    assert len(cognito_waivers) == (7 if env == "dev" else 0)  # one per API method
    # The customization stack waives only wildcard resources (job/run name prefixes).
    customization = {rule for path, rule, _ in nag if f"/chatbot-{env}/Customization/" in path}
    assert all(rule.startswith("AwsSolutions::AwsSolutions-IAM5[") for rule in customization)
    assert bool(customization) == ("Customization" in STACKS_BY_ENV[env])


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_cfn_lint_has_no_errors(synthesized: Synthesized, env: str) -> None:
    for stack, path in synthesized.template_files[env].items():
        matches = lint_file(path, config=ManualArgs(regions=["us-east-1"]))
        errors = [str(m) for m in matches if m.rule.id.startswith("E")]
        assert errors == [], f"{env}/{stack}"


def test_second_synth_is_byte_identical(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Two synths back to back (not against the session's): in a shared working tree an edit
    # to container/, lambda/ or customize/ in between would change asset hashes, not a
    # determinism bug.
    first, second = (
        synthesize_all(base / "cdk.out")
        for base in (tmp_path_factory.mktemp("synth-b"), tmp_path_factory.mktemp("synth-c"))
    )
    for env in ENVIRONMENTS:
        for stack, path in first.template_files[env].items():
            assert path.read_bytes() == second.template_files[env][stack].read_bytes(), stack
    # The staged artifacts of the two roles (shared by every environment): content-addressed.
    staged = [
        sorted(p.name for p in s.outdir.glob("asset.*") if (p / "serving.properties").is_file())
        for s in (first, second)
    ]
    assert staged[0] == staged[1]
    assert len(staged[0]) == 2
    for name in staged[0]:
        files = sorted(p.relative_to(first.outdir / name) for p in (first.outdir / name).rglob("*"))
        for relative in files:
            one, two = first.outdir / name / relative, second.outdir / name / relative
            assert one.is_dir() or one.read_bytes() == two.read_bytes(), relative


def test_endpoints_are_named_per_environment(synthesized: Synthesized) -> None:
    for env in ENVIRONMENTS:
        endpoints = _resources(synthesized.templates[env]["Inference"], "AWS::SageMaker::Endpoint")
        names = sorted(e["Properties"]["EndpointName"] for e in endpoints.values())
        assert names == [f"chatbot-{env}-chat", f"chatbot-{env}-moderation"]


def test_dev_is_destroyable_and_env_agnostic(synthesized: Synthesized) -> None:
    stateful = synthesized.templates["dev"]["Stateful"]
    table = next(iter(_resources(stateful, "AWS::DynamoDB::Table").values()))
    assert table["DeletionPolicy"] == "Delete"
    assert table["Properties"]["DeletionProtectionEnabled"] is False
    manifest = json.loads(
        (synthesized.outdir / "assembly-chatbot-dev" / "manifest.json").read_text()
    )
    environments = {a["environment"] for a in manifest["artifacts"].values() if "environment" in a}
    assert environments == {"aws://unknown-account/unknown-region"}


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_staging_and_prod_protect_data(synthesized: Synthesized, env: str) -> None:
    stateful = synthesized.templates[env]["Stateful"]
    for type_name in ("AWS::DynamoDB::Table", "AWS::S3::Bucket", "AWS::KMS::Key"):
        for resource in _resources(stateful, type_name).values():
            assert resource["DeletionPolicy"] == "Retain", type_name
    table = next(iter(_resources(stateful, "AWS::DynamoDB::Table").values()))
    assert table["Properties"]["DeletionProtectionEnabled"] is True
    manifest = json.loads(
        (synthesized.outdir / f"assembly-chatbot-{env}" / "manifest.json").read_text()
    )
    stacks = [a for a in manifest["artifacts"].values() if a["type"] == "aws:cloudformation:stack"]
    assert len(stacks) == len(STACKS_BY_ENV[env])
    assert all(a["properties"]["terminationProtection"] is True for a in stacks)
    assert all(a["environment"] == "aws://111111111111/us-east-1" for a in stacks)


def test_prod_scales_chat_between_two_and_eight(synthesized: Synthesized) -> None:
    inference = synthesized.templates["prod"]["Inference"]
    targets = _resources(inference, "AWS::ApplicationAutoScaling::ScalableTarget")
    chat = [t for t in targets.values() if "chatbot-prod-chat" in json.dumps(t)]
    assert len(chat) == 1
    assert (chat[0]["Properties"]["MinCapacity"], chat[0]["Properties"]["MaxCapacity"]) == (2, 8)
    dev_targets = _resources(
        synthesized.templates["dev"]["Inference"], "AWS::ApplicationAutoScaling::ScalableTarget"
    )
    # dev scales inference-component copies (tests/infra/test_hosting.py), not instances.
    assert {t["Properties"]["ScalableDimension"] for t in dev_targets.values()} == {
        "sagemaker:inference-component:DesiredCopyCount"
    }


def test_chat_engine_settings_per_environment(synthesized: Synthesized) -> None:
    def chat_model(env: str) -> Any:
        models = _resources(synthesized.templates[env]["Inference"], "AWS::SageMaker::Model")
        return next(m for k, m in models.items() if k.startswith("Chat"))["Properties"]

    dev, prod = chat_model("dev"), chat_model("prod")
    assert dev["PrimaryContainer"]["Environment"]["OPTION_TENSOR_PARALLEL_DEGREE"] == "1"
    assert prod["PrimaryContainer"]["Environment"]["OPTION_TENSOR_PARALLEL_DEGREE"] == "4"
    assert "redpajama-incite-chat-3b-v1" in json.dumps(dev["PrimaryContainer"]["ModelDataSource"])
    assert "gpt-neoxt-chat-base-20b" in json.dumps(prod["PrimaryContainer"]["ModelDataSource"])
    configs = _resources(
        synthesized.templates["prod"]["Inference"], "AWS::SageMaker::EndpointConfig"
    )
    chat_config = next(c for k, c in configs.items() if k.startswith("Chat"))
    variant = chat_config["Properties"]["ProductionVariants"][0]
    assert variant["InstanceType"] == "ml.g5.12xlarge"
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 3600


def test_inference_image_gets_the_regional_dlc_base_image(synthesized: Synthesized) -> None:
    manifest = json.loads(
        (synthesized.outdir / "assembly-chatbot-prod" / "manifest.json").read_text()
    )
    assets_files = [
        synthesized.outdir / "assembly-chatbot-prod" / a["properties"]["file"]
        for a in manifest["artifacts"].values()
        if a["type"] == "cdk:asset-manifest"
    ]
    images = {}
    for path in assets_files:
        images.update(json.loads(path.read_text()).get("dockerImages", {}))
    build_args = [i["source"].get("dockerBuildArgs", {}) for i in images.values()]
    platforms = sorted(i["source"].get("platform") for i in images.values())
    # The inference and customization-jobs images (amd64) and the front door's (arm64).
    assert platforms == ["linux/amd64", "linux/amd64", "linux/arm64"]
    dlc = "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.30.0-gpu-py312-cu130-ubuntu24.04"
    # Both GPU images build on the region's vLLM DLC.
    assert build_args.count({"BASE_IMAGE": f"{dlc}-sagemaker"}) == 2


def test_cdk_nag_is_active_and_fails_synth_on_a_finding(tmp_path: Any) -> None:
    from aws_cdk import aws_sqs as sqs

    from stacks.app import build_app
    from stacks.stage import ChatbotStage, SourcePaths

    sources = SourcePaths.from_repository(REPO_ROOT)
    app = build_app(
        env_names=["dev"],
        outdir=str(tmp_path / "cdk.out"),
        sources=sources,
    )
    stage = app.node.find_child("chatbot-dev")
    assert isinstance(stage, ChatbotStage)
    sqs.Queue(stage.stateful, "NoDlqNoTls")  # a finding the app's own plugin must catch
    with pytest.raises(RuntimeError, match="ValidationFailed") as raised:
        app.synth()
    assert "AwsSolutions-SQS3" in str(raised.value)
    assert "AwsSolutions-SQS4" in str(raised.value)
