"""A prepared account for the preflight checks: moto in server mode plus Stubber-backed clients."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from preflight.account import AccountContext
from stacks.base_image import resolve_base_image
from stacks.config import EnvironmentConfig, load_environment
from tests.servers import moto_server

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
# moto's fixed account; the test environment deploys there.
ACCOUNT = "123456789012"
REGION = "us-east-1"
# Weights small enough to upload: 1,000 and 2,000 float16 parameters.
CHAT_PARAMETERS_BILLION = 1e-6
MODERATION_PARAMETERS_BILLION = 2e-6


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


def environment(name: str = "dev", **changes: Any) -> EnvironmentConfig:
    """The cdk.json environment ``name`` aimed at moto's account, with tiny weights."""
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    raw = json.loads(json.dumps(context["chatbot:environments"][name]))
    raw.update(account=ACCOUNT, region=REGION)
    raw["chat"]["model"]["parameters_billion"] = CHAT_PARAMETERS_BILLION
    raw["moderation"]["model"]["parameters_billion"] = MODERATION_PARAMETERS_BILLION
    for path, value in changes.items():
        target = raw
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return load_environment({"chatbot:environments": {name: raw}}, name)


def recorded(name: str) -> dict[str, Any]:
    """A response in the API's shape from tests/preflight/fixtures/."""
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


class PreparedAccount:
    """An account on which every check passes; tests remove one precondition at a time."""

    def __init__(self, url: str, config: EnvironmentConfig) -> None:
        self.url = url
        self.config = config
        self.session = boto3.Session(region_name=REGION)
        self.bucket = f"chatbot-{config.name}-assets-{ACCOUNT}-{REGION}"
        self.quotas = {
            "sagemaker": recorded("servicequotas_sagemaker"),
            "apigateway": recorded("servicequotas_apigateway"),
        }
        self.lambda_settings = recorded("lambda_get_account_settings")

    def client(self, service: str) -> Any:
        return self.session.client(service, endpoint_url=self.url)

    def prepare(self) -> None:
        urllib.request.urlopen(
            urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        ).close()
        cloudformation = self.client("cloudformation")
        cloudformation.create_stack(
            StackName="CDKToolkit",
            TemplateBody=json.dumps(
                {
                    "Resources": {"Handle": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
                    "Outputs": {"BootstrapVersion": {"Value": "21"}},
                }
            ),
        )
        self.client("ssm").put_parameter(
            Name="/cdk-bootstrap/hnb659fds/version", Value="21", Type="String"
        )
        s3 = self.client("s3")
        s3.create_bucket(Bucket=self.bucket)
        for role in ("chat", "moderation"):
            self.stage_weights(getattr(self.config, role).model.weights_name, role)
        uri = resolve_base_image(self.config.base_image, self.config.region)
        repository, _, tag = uri.partition("/")[2].rpartition(":")
        ecr = self.client("ecr")
        ecr.create_repository(repositoryName=repository)
        ecr.put_image(
            repositoryName=repository,
            imageTag=tag,
            imageManifest=json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "config": {"digest": "sha256:" + "0" * 64, "size": 1, "mediaType": "x"},
                    "layers": [],
                }
            ),
        )

    def stage_weights(self, weights_name: str, role: str, *, skip: str = "") -> None:
        model = getattr(self.config, role).model
        size = round(model.parameters_billion * 1e9 * 2)
        files = {
            "config.json": b'{"model_type": "gpt_neox"}',
            "tokenizer_config.json": b"{}",
            "tokenizer.json": b"{}",
            "model-00001-of-00002.safetensors": b"\0" * (size // 2),
            "model-00002-of-00002.safetensors": b"\0" * (size - size // 2),
        }
        s3 = self.client("s3")
        for name, body in files.items():
            if name != skip:
                s3.put_object(Bucket=self.bucket, Key=f"models/{weights_name}/{name}", Body=body)

    def context(self, *, quotas: dict[str, Any] | None = None) -> AccountContext:
        """A context whose Service Quotas and Lambda clients answer from Stubbers."""
        quota_client = self.session.client("service-quotas")
        stubber = Stubber(quota_client)
        for code, response in (quotas or self.quotas).items():
            for operation in ("list_aws_default_service_quotas", "list_service_quotas"):
                stubber.add_response(
                    operation,
                    response[operation],
                    {"ServiceCode": code, "MaxResults": 100},
                )
        stubber.activate()
        lambda_client = self.session.client("lambda")
        lambda_stubber = Stubber(lambda_client)
        lambda_stubber.add_response("get_account_settings", self.lambda_settings, {})
        lambda_stubber.activate()
        return AccountContext(
            config=self.config,
            session=self.session,
            clients={"service-quotas": quota_client, "lambda": lambda_client},
            endpoint_url=self.url,
        )


@pytest.fixture
def account(moto_url: str) -> PreparedAccount:
    prepared = PreparedAccount(moto_url, environment("dev"))
    prepared.prepare()
    return prepared
