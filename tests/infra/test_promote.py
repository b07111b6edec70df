"""make promote against moto's SageMaker in server mode, and the format-preserving cdk.json edit.

moto (server mode, real HTTP) implements CreateModelPackage, DescribeModelPackage and
UpdateModelPackage with approval statuses, so the script runs its unmodified boto3 client
against it; no Stubber is needed.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from scripts.cdk_json_edit import JsonEditError, set_member
from scripts.promote import PromotionError, main, promote
from stacks.config import load_environment
from tests.infra.conftest import REPO_ROOT
from tests.servers import moto_server

REGION = "us-east-1"
RUN_PREFIX = "customization/runs/run-7/training/chatbot-dev-cust-run-7-train/output/model/"


@pytest.fixture(scope="module")
def sagemaker_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def client(sagemaker_endpoint: str) -> Any:
    return boto3.client("sagemaker", region_name=REGION, endpoint_url=sagemaker_endpoint)


def _register(
    client: Any, group: str, *, status: str, bucket: str, prefix: str = RUN_PREFIX
) -> str:
    with contextlib.suppress(client.exceptions.ClientError):  # created by an earlier test
        client.create_model_package_group(ModelPackageGroupName=group)
    response = client.create_model_package(
        ModelPackageGroupName=group,
        ModelApprovalStatus=status,
        InferenceSpecification={
            "Containers": [
                {
                    "Image": "111111111111.dkr.ecr.us-east-1.amazonaws.com/chat:1",
                    "ModelDataSource": {
                        "S3DataSource": {
                            "S3Uri": f"s3://{bucket}/{prefix}",
                            "S3DataType": "S3Prefix",
                            "CompressionType": "None",
                        }
                    },
                }
            ],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["application/jsonlines"],
        },
    )
    arn: str = response["ModelPackageArn"]
    return arn


def _cdk_json() -> str:
    return (REPO_ROOT / "cdk.json").read_text(encoding="utf-8")


def _changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    diff = list(difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0))
    removed = [line[1:] for line in diff[2:] if line.startswith("-")]
    added = [line[1:] for line in diff[2:] if line.startswith("+")]
    return removed, added


def test_pending_package_is_refused_without_the_flag(client: Any) -> None:
    arn = _register(
        client,
        "chatbot-dev-chat",
        status="PendingManualApproval",
        bucket="chatbot-dev-assets-123456789012-us-east-1",
    )
    with pytest.raises(PromotionError, match=r"PendingManualApproval.*APPROVE=1"):
        promote(_cdk_json(), "dev", arn, approve=False, client=client)
    status = client.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"]
    assert status == "PendingManualApproval"


def test_approve_flag_approves_and_edits_only_the_chat_model(client: Any) -> None:
    bucket = "chatbot-dev-assets-123456789012-us-east-1"
    arn = _register(client, "chatbot-dev-chat", status="PendingManualApproval", bucket=bucket)
    before, after = promote(_cdk_json(), "dev", arn, approve=True, client=client)
    assert client.describe_model_package(ModelPackageName=arn)["ModelApprovalStatus"] == "Approved"
    removed, added = _changed_lines(before, after)
    # One line gains a comma; two members are added with the neighbours' indentation.
    assert removed == ['            "max_new_tokens_cap": 1024']
    assert added == [
        '            "max_new_tokens_cap": 1024,',
        f'            "weights_prefix": "{RUN_PREFIX}",',
        f'            "model_package_arn": "{arn}"',
    ]
    config = load_environment(json.loads(after)["context"], "dev")
    assert config.chat.model.serving_prefix == RUN_PREFIX
    assert config.moderation.model.model_package_arn is None
    # Promoting again replaces the values in place: the text is stable.
    assert promote(after, "dev", arn, approve=False, client=client)[1] == after


def test_rejected_package_is_refused_even_with_the_flag(client: Any) -> None:
    arn = _register(client, "chatbot-dev-chat", status="Rejected", bucket="chatbot-dev-assets-1")
    with pytest.raises(PromotionError, match="is Rejected"):
        promote(_cdk_json(), "dev", arn, approve=True, client=client)


def test_weights_in_another_environments_bucket_are_refused(client: Any) -> None:
    arn = _register(
        client, "chatbot-dev-chat", status="Approved", bucket="chatbot-staging-assets-1-us-east-1"
    )
    with pytest.raises(PromotionError, match="not this environment's"):
        promote(_cdk_json(), "dev", arn, approve=False, client=client)


def test_package_of_another_environments_group_fails_validation(client: Any) -> None:
    arn = _register(
        client,
        "chatbot-staging-chat",
        status="Approved",
        bucket="chatbot-prod-assets-111111111111-us-east-1",
    )
    with pytest.raises(PromotionError, match="model_package_arn: the package belongs to group"):
        promote(_cdk_json(), "prod", arn, approve=False, client=client)


def test_make_promote_prints_the_diff_and_writes_cdk_json(
    sagemaker_endpoint: str, client: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arn = _register(
        client, "chatbot-dev-chat", status="Approved", bucket="chatbot-dev-assets-9-us-east-1"
    )
    target = tmp_path / "cdk.json"
    target.write_text(_cdk_json(), encoding="utf-8")
    os.environ["AWS_ENDPOINT_URL_SAGEMAKER"] = sagemaker_endpoint
    try:
        assert main(["--env", "dev", "--package", arn, "--cdk-json", str(target)]) == 0
    finally:
        del os.environ["AWS_ENDPOINT_URL_SAGEMAKER"]
    out = capsys.readouterr().out
    assert "--- a/cdk.json" in out
    assert f'+            "model_package_arn": "{arn}"' in out
    assert (
        json.loads(target.read_text())["context"]["chatbot:environments"]["dev"]["chat"]["model"][
            "model_package_arn"
        ]
        == arn
    )


def test_make_help_lists_promote() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert any(line.split()[:1] == ["promote"] for line in result.stdout.splitlines())


def test_set_member_keeps_every_other_byte() -> None:
    text = '{\n  "a": {"x": 1,   "y": [1, 2]},\n  "b": {\n    "k": "v"\n  }\n}\n'
    assert set_member(text, ["a"], "x", 2) == text.replace('"x": 1', '"x": 2')
    assert set_member(text, ["b"], "n", "é") == text.replace(
        '"k": "v"\n', '"k": "v",\n    "n": "é"\n'
    )
    assert set_member(text, ["a"], "z", None) == text.replace("[1, 2]}", '[1, 2], "z": null}')
    with pytest.raises(JsonEditError, match="no object member 'c'"):
        set_member(text, ["c"], "x", 1)
    with pytest.raises(JsonEditError, match="not an object"):
        set_member(text, ["a", "y"], "x", 1)


def test_script_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scripts.promote", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert "--approve" in result.stdout
