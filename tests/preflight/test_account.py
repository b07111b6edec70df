"""Account checks: all pass on a prepared account; each fails with its own message without it.

STS, CloudFormation, SSM, S3 and ECR are moto in server mode; moto implements Service Quotas
for VPC only and not Lambda's GetAccountSettings, so those two answer from botocore Stubbers
loaded with responses in the APIs' shape (tests/preflight/fixtures/).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from typing import Any

import pytest
from botocore.stub import Stubber

from preflight.account import CHECKS, AccountContext, read_policy, run_checks
from preflight.report import CheckResult
from tests.preflight.conftest import ROOT, PreparedAccount, environment

CHECK_NAMES = [check.name for check in CHECKS]


def run(ctx: AccountContext, *names: str) -> list[CheckResult]:
    """Credentials (which records the account), then the named checks."""
    checks = [c for c in CHECKS if c.name == "credentials" or c.name in names]
    results = list(run_checks(ctx, checks))
    assert results[0].status == "ok", results[0].line
    return results[1:]


def only(results: list[CheckResult], status: str = "FAIL") -> list[str]:
    return [r.line for r in results if r.status == status]


def test_every_check_passes_on_a_prepared_account(account: PreparedAccount) -> None:
    results = list(run_checks(account.context()))
    assert [r.line for r in results if r.status != "ok"] == []
    names = {r.name for r in results}
    assert {"credentials", "target", "bootstrap", "assets bucket", "weights chat"} <= names
    assert "quota ml.g5.2xlarge for endpoint usage" in names
    assert "quota ml.g5.2xlarge for spot training job usage" in names
    assert "quota ml.m5.xlarge for processing job usage" in names
    assert {"api gateway timeout", "lambda concurrency", "base image"} <= names


def test_no_credentials_fails_with_a_line_naming_them_and_no_traceback(tmp_path: Any) -> None:
    # The acceptance run: no AWS variables, no config files, no instance metadata.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(tmp_path),
        AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(str(ROOT / p) for p in (".", "container", "lambda")),
    )
    done = subprocess.run(
        [sys.executable, "-m", "preflight", "account", "--env", "dev"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1
    assert "FAIL  credentials: no AWS credentials found" in done.stdout
    assert "Traceback" not in output


def test_other_account_fails_target(moto_url: str) -> None:
    prepared = PreparedAccount(moto_url, environment("prod", account="210987654321"))
    prepared.prepare()
    assert only(run(prepared.context(), "target")) == [
        "FAIL  target: credentials are for account 123456789012 but cdk.json deploys prod to "
        "210987654321: use credentials (AWS_PROFILE) of 210987654321"
    ]


def test_environment_agnostic_target_reports_where_it_deploys(moto_url: str) -> None:
    prepared = PreparedAccount(moto_url, environment("dev", account=None, region=None))
    results = run(prepared.context(), "target")
    assert results[0].status == "ok"
    assert "deploys to 123456789012/us-east-1" in results[0].message


def test_missing_bootstrap_stack_fails(account: PreparedAccount) -> None:
    account.client("cloudformation").delete_stack(StackName="CDKToolkit")
    assert only(run(account.context(), "bootstrap")) == [
        "FAIL  bootstrap: no CDKToolkit stack in us-east-1: run "
        "`npx cdk bootstrap aws://123456789012/us-east-1`"
    ]


def test_old_bootstrap_version_fails(account: PreparedAccount) -> None:
    account.client("ssm").put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value="5", Type="String", Overwrite=True
    )
    [line] = only(run(account.context(), "bootstrap"))
    assert "version 5 (/cdk-bootstrap/hnb659fds/version) is older than the 6" in line


def test_bootstrap_version_falls_back_to_the_stack_output(account: PreparedAccount) -> None:
    account.client("ssm").delete_parameter(Name="/cdk-bootstrap/hnb659fds/version")
    ctx = account.context()
    ctx.required_bootstrap_version = 22
    [line] = only(run(ctx, "bootstrap"))
    assert "version 21 (the stack output BootstrapVersion) is older than the 22" in line


def _without_applied(quotas: dict[str, Any], service: str, name: str) -> dict[str, Any]:
    changed = copy.deepcopy(quotas)
    applied = changed[service]["list_service_quotas"]["Quotas"]
    changed[service]["list_service_quotas"]["Quotas"] = [
        q for q in applied if q["QuotaName"] != name
    ]
    return {service: changed[service]}


def test_endpoint_quota_below_the_scaled_fleet_fails(account: PreparedAccount) -> None:
    quotas = _without_applied(account.quotas, "sagemaker", "ml.g5.2xlarge for endpoint usage")
    # dev: chat and moderation components of one copy each, plus the one instance each
    # endpoint's rolling update starts beside it.
    assert only(run(account.context(quotas=quotas), "quota endpoints")) == [
        "FAIL  quota ml.g5.2xlarge for endpoint usage: quota 0 < 4 needed: request an increase "
        "(Service Quotas console, SageMaker, 'ml.g5.2xlarge for endpoint usage') to at least 4"
    ]


def test_prod_needs_the_maximum_instances_of_both_endpoints(moto_url: str) -> None:
    prepared = PreparedAccount(moto_url, environment("prod"))
    quotas = copy.deepcopy(prepared.quotas)
    for quota in quotas["sagemaker"]["list_service_quotas"]["Quotas"]:
        if quota["QuotaName"] == "ml.g5.12xlarge for endpoint usage":
            quota["Value"] = 7.0
    results = run(prepared.context(quotas={"sagemaker": quotas["sagemaker"]}), "quota endpoints")
    assert [r.line for r in results] == [
        # chat 8 at most, twice while a blue/green update runs the green fleet beside it.
        "FAIL  quota ml.g5.12xlarge for endpoint usage: quota 7 < 16 needed: request an increase "
        "(Service Quotas console, SageMaker, 'ml.g5.12xlarge for endpoint usage') to at least 16",
        # moderation 4 at most, twice the same way.
        "FAIL  quota ml.g5.2xlarge for endpoint usage: quota 4 < 8 needed: request an increase "
        "(Service Quotas console, SageMaker, 'ml.g5.2xlarge for endpoint usage') to at least 8",
    ]


def test_customization_training_quota_fails_without_spot_quota(account: PreparedAccount) -> None:
    quotas = _without_applied(
        account.quotas, "sagemaker", "ml.g5.2xlarge for spot training job usage"
    )
    failed = only(run(account.context(quotas=quotas), "quota customization"))
    assert failed == [
        "FAIL  quota ml.g5.2xlarge for spot training job usage: quota 0 < 1 needed: request an "
        "increase (Service Quotas console, SageMaker, 'ml.g5.2xlarge for spot training job "
        "usage') to at least 1"
    ]


def test_unknown_instance_type_in_the_region_fails(account: PreparedAccount) -> None:
    quotas = copy.deepcopy(account.quotas)
    quotas["sagemaker"]["list_aws_default_service_quotas"]["Quotas"] = [
        q
        for q in quotas["sagemaker"]["list_aws_default_service_quotas"]["Quotas"]
        if q["QuotaName"] != "ml.g5.xlarge for processing job usage"
    ]
    quotas = _without_applied(quotas, "sagemaker", "ml.g5.xlarge for processing job usage")
    [line] = only(run(account.context(quotas=quotas), "quota customization"))
    assert "lists no quota 'ml.g5.xlarge for processing job usage' in us-east-1" in line


def test_missing_assets_bucket_says_deploy_stateful_first(account: PreparedAccount) -> None:
    s3 = account.client("s3")
    for item in s3.list_objects_v2(Bucket=account.bucket).get("Contents", []):
        s3.delete_object(Bucket=account.bucket, Key=item["Key"])
    s3.delete_bucket(Bucket=account.bucket)
    failed = only(run(account.context(), "assets bucket", "weights chat"))
    assert failed[0] == (
        f"FAIL  assets bucket: {account.bucket} does not exist: deploy Stateful first: "
        "`npx cdk deploy -c env=dev chatbot-dev/Stateful`"
    )
    assert failed[1].startswith("FAIL  weights chat: deploy Stateful first")


@pytest.mark.parametrize(
    ("skip", "expected"),
    [
        ("config.json", "no config.json"),
        ("tokenizer.json", "no tokenizer (tokenizer_config.json and one of tokenizer.json"),
        ("model-00002-of-00002.safetensors", "*.safetensors total 0.00 GB, expected 0.00 GB"),
    ],
)
def test_incomplete_weights_fail(account: PreparedAccount, skip: str, expected: str) -> None:
    s3 = account.client("s3")
    name = account.config.chat.model.weights_name
    s3.delete_object(Bucket=account.bucket, Key=f"models/{name}/{skip}")
    [line] = only(run(account.context(), "weights chat", "weights moderation"))
    assert line.startswith(f"FAIL  weights chat: s3://{account.bucket}/models/{name}/: ")
    assert expected in line
    assert "make stage-model SRC=togethercomputer/RedPajama-INCITE-Chat-3B-v1" in line


def test_weights_of_the_wrong_size_fail(moto_url: str) -> None:
    # float32 weights staged where cdk.json says float16: twice the size.
    prepared = PreparedAccount(moto_url, environment("dev", moderation__model__dtype="float32"))
    prepared.prepare()
    [line] = only(run(prepared.context(), "weights moderation"))
    assert "total 0.00 GB, expected 0.00 GB (2e-06B parameters x 4 bytes of float32" in line


def test_empty_weights_prefix_fails(account: PreparedAccount) -> None:
    s3 = account.client("s3")
    name = account.config.moderation.model.weights_name
    for item in s3.list_objects_v2(Bucket=account.bucket, Prefix=f"models/{name}/")["Contents"]:
        s3.delete_object(Bucket=account.bucket, Key=item["Key"])
    [line] = only(run(account.context(), "weights moderation"))
    assert f"models/{name}/ is empty: stage the weights with `make stage-model" in line


def test_lowered_api_gateway_timeout_quota_fails(account: PreparedAccount) -> None:
    quotas = copy.deepcopy(account.quotas)
    quotas["apigateway"]["list_service_quotas"]["Quotas"] = [
        {**quotas["apigateway"]["list_aws_default_service_quotas"]["Quotas"][0], "Value": 10000.0}
    ]
    [line] = only(
        run(account.context(quotas={"apigateway": quotas["apigateway"]}), "api gateway timeout")
    )
    assert "Maximum integration timeout in milliseconds is 10000 < 29000 ms" in line


def test_lambda_concurrency_without_room_fails(account: PreparedAccount) -> None:
    account.lambda_settings = copy.deepcopy(account.lambda_settings)
    account.lambda_settings["AccountLimit"]["UnreservedConcurrentExecutions"] = 105
    assert only(run(account.context(), "lambda concurrency")) == [
        "FAIL  lambda concurrency: reserving 10 of the 105 unreserved (account limit 1000) would "
        "leave fewer than 100: request a higher 'Concurrent executions' quota or lower "
        "front_door.reserved_concurrency"
    ]


def test_access_denied_is_a_fail_line_naming_the_permission(account: PreparedAccount) -> None:
    client = account.session.client("lambda")
    stubber = Stubber(client)
    stubber.add_client_error("get_account_settings", "AccessDeniedException", "not allowed", 403)
    stubber.activate()
    ctx = account.context()
    ctx.clients = {**ctx.clients, "lambda": client}
    [line] = only(run(ctx, "lambda concurrency"))
    assert line == (
        "FAIL  lambda concurrency: access denied on GetAccountSettings (AccessDeniedException): "
        "grant lambda:GetAccountSettings (docs/infra.md has the read-only policy)"
    )


def test_missing_base_image_fails(account: PreparedAccount) -> None:
    ecr = account.client("ecr")
    repository = "vllm"
    ecr.batch_delete_image(
        repositoryName=repository,
        imageIds=ecr.list_images(repositoryName=repository)["imageIds"],
    )
    [line] = only(run(account.context(), "base image"))
    assert line.startswith("FAIL  base image: 763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:")
    assert "ImageNotFound" in line


def test_base_image_outside_ecr_is_a_note(moto_url: str) -> None:
    config = environment("dev", base_image={"uri": "docker.io/vllm/vllm-openai:v0.30.0"})
    prepared = PreparedAccount(moto_url, config)
    results = run(prepared.context(), "base image")
    assert [r.status for r in results] == ["note"]
    assert "docker pull" in results[0].message


def test_policy_covers_every_check_and_only_reads() -> None:
    policy = read_policy()
    actions = policy["Statement"][0]["Action"]
    assert {p for check in CHECKS for p in check.permissions} == set(actions)
    verbs = {action.split(":")[1] for action in actions}
    assert all(v.startswith(("Get", "List", "Describe", "BatchGet")) for v in verbs), verbs
    assert len(CHECK_NAMES) == len(set(CHECK_NAMES))


def test_idle_cost_is_ok_where_the_models_sleep_and_warns_where_they_never_can(
    account: PreparedAccount, moto_url: str
) -> None:
    [dev] = run(account.context(), "idle cost")
    assert dev.status == "ok"
    assert "scale to zero when idle: about $0.00 a day" in dev.message
    prod = PreparedAccount(moto_url, environment("prod"))
    [line] = [r.line for r in run(prod.context(), "idle cost")]
    assert line.startswith("note  idle cost: warning: prod can never scale to zero; idle it costs")
    assert "hosting.scale_to_zero" in line
