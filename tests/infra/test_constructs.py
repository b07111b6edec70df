"""Fine-grained construct tests, each construct in a bare Stack."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk.assertions import Match, Template

from stacks.config import ENVIRONMENTS_CONTEXT_KEY, EndpointSettings, load_environment
from stacks.constructs.front_door_api import FrontDoorApi
from stacks.constructs.llm_endpoint import LlmEndpoint
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.serving_artifacts import ServingArtifacts, artifacts_digest
from stacks.constructs.session_table import SessionTable
from tests.infra.conftest import REPO_ROOT


def _artifact_dir(root: Path, role: str) -> Path:
    directory = root / role
    (directory / "templates").mkdir(parents=True)
    (directory / "serving.properties").write_text(f"option.role={role}\n")
    (directory / "templates" / "prompt.txt").write_text("<human>: {q}\n<bot>:")
    return directory


def _policy_statements(template: Template) -> list[dict[str, Any]]:
    statements = []
    for policy in template.find_resources("AWS::IAM::Policy").values():
        statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else list(actions)


class TestSessionTable:
    @pytest.fixture(scope="class")
    @classmethod
    def templates(cls) -> dict[bool, Template]:
        result = {}
        for protect in (True, False):
            stack = Stack(App())
            table = SessionTable(stack, "Sessions", protect_data=protect)
            reader = iam.Role(stack, "Reader", assumed_by=iam.AccountRootPrincipal())
            table.grant_session_access(reader)
            result[protect] = Template.from_stack(stack)
        return result

    def test_keys_index_ttl_recovery_and_encryption(self, templates: dict[bool, Template]) -> None:
        templates[True].has_resource_properties(
            "AWS::DynamoDB::Table",
            {
                "KeySchema": [
                    {"AttributeName": "pk", "KeyType": "HASH"},
                    {"AttributeName": "sk", "KeyType": "RANGE"},
                ],
                "BillingMode": "PAY_PER_REQUEST",
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": "by-owner",
                        "KeySchema": [
                            {"AttributeName": "owner", "KeyType": "HASH"},
                            {"AttributeName": "updated_at", "KeyType": "RANGE"},
                        ],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
                "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": Match.object_like(
                    {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()}
                ),
                "DeletionProtectionEnabled": True,
            },
        )
        templates[True].has_resource("AWS::DynamoDB::Table", {"DeletionPolicy": "Retain"})
        templates[True].has_resource_properties("AWS::KMS::Key", {"EnableKeyRotation": True})

    def test_unprotected_table_is_destroyable(self, templates: dict[bool, Template]) -> None:
        templates[False].has_resource(
            "AWS::DynamoDB::Table",
            {
                "DeletionPolicy": "Delete",
                "Properties": Match.object_like({"DeletionProtectionEnabled": False}),
            },
        )

    def test_grant_covers_the_table_and_its_index_only(
        self, templates: dict[bool, Template]
    ) -> None:
        statements = _policy_statements(templates[True])
        data = [s for s in statements if any(a.startswith("dynamodb:") for a in _actions(s))]
        assert len(data) == 1
        resources = json.dumps(data[0]["Resource"])
        assert "/index/by-owner" in resources
        assert "*" not in resources
        assert "dynamodb:Query" in _actions(data[0])
        kms = [s for s in statements if any(a.startswith("kms:") for a in _actions(s))]
        assert all("*" not in a for s in kms for a in _actions(s))


class TestModelAssetsBucket:
    @pytest.fixture(scope="class")
    @classmethod
    def template(cls) -> Template:
        stack = Stack(App())
        bucket = ModelAssetsBucket(stack, "Assets", env_name="dev", protect_data=True)
        reader = iam.Role(stack, "Reader", assumed_by=iam.AccountRootPrincipal())
        bucket.grant_read_model(reader, "tiny-model")
        return Template.from_stack(stack)

    def test_kms_versioning_private_and_logged(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::S3::Bucket",
            {
                "BucketName": Match.any_value(),
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        Match.object_like(
                            {
                                "ServerSideEncryptionByDefault": Match.object_like(
                                    {"SSEAlgorithm": "aws:kms"}
                                )
                            }
                        )
                    ]
                },
                "VersioningConfiguration": {"Status": "Enabled"},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "LoggingConfiguration": Match.object_like({"LogFilePrefix": "model-assets/"}),
            },
        )

    def test_tls_only(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::S3::BucketPolicy",
            {
                "PolicyDocument": {
                    "Statement": Match.array_with(
                        [
                            Match.object_like(
                                {
                                    "Effect": "Deny",
                                    "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                                }
                            )
                        ]
                    )
                }
            },
        )

    def test_model_read_grant_is_confined_to_its_prefix(self, template: Template) -> None:
        statements = _policy_statements(template)
        get = next(s for s in statements if _actions(s) == ["s3:GetObject"])
        assert json.dumps(get["Resource"]).endswith('/models/tiny-model/*"]]}')
        listing = next(s for s in statements if _actions(s) == ["s3:ListBucket"])
        assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/tiny-model/*"]}}
        assert any(_actions(s) == ["kms:Decrypt"] for s in statements)


def test_artifacts_digest_ignores_mtimes_and_caches_but_not_content(tmp_path: Path) -> None:
    source = _artifact_dir(tmp_path, "chat")
    first = artifacts_digest(source)
    assert len(first) == 64
    os.utime(source / "serving.properties", (1_000_000, 1_000_000))
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert artifacts_digest(source) == first
    (source / "templates" / "prompt.txt").rename(source / "templates" / "renamed.txt")
    assert artifacts_digest(source) != first
    (source / "templates" / "renamed.txt").rename(source / "templates" / "prompt.txt")
    (source / "serving.properties").write_text("option.role=moderation\n")
    assert artifacts_digest(source) != first


def _endpoint_settings(context: dict[str, Any], **changes: Any) -> EndpointSettings:
    raw = copy.deepcopy(context[ENVIRONMENTS_CONTEXT_KEY]["prod"]["chat"])
    raw.update(changes)
    changed = copy.deepcopy(context)
    changed[ENVIRONMENTS_CONTEXT_KEY]["prod"]["chat"] = raw
    return load_environment(changed, "prod").chat


class TestLlmEndpoint:
    @pytest.fixture(scope="class")
    @classmethod
    def template(
        cls, cdk_json_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
    ) -> Template:
        root = tmp_path_factory.mktemp("artifacts")
        stack = Stack(App())
        bucket = ModelAssetsBucket(stack, "Assets", env_name="test", protect_data=False)
        image = ecr_assets.DockerImageAsset(
            stack,
            "Image",
            directory=str(REPO_ROOT / "container"),
            build_args={"BASE_IMAGE": "example/base:1"},
        )
        settings = _endpoint_settings(cdk_json_context)
        artifacts = ServingArtifacts(
            stack,
            "Artifacts",
            source_dir=_artifact_dir(root, "chat"),
            role="chat",
            assets_bucket=bucket,
            weights_prefix=settings.model.serving_prefix,
        )
        scaled = LlmEndpoint(
            stack,
            "Scaled",
            endpoint_name="chatbot-test-chat",
            settings=settings,
            image=image,
            artifacts=artifacts,
            assets_bucket=bucket,
        )
        ebs = _endpoint_settings(
            cdk_json_context,
            instance_type="ml.p3.8xlarge",
            volume_size_gb=200,
            scaling=None,
            initial_instance_count=1,
        )
        LlmEndpoint(
            stack,
            "Ebs",
            endpoint_name="chatbot-test-ebs",
            settings=ebs,
            image=image,
            artifacts=artifacts,
            assets_bucket=bucket,
        )
        caller = iam.Role(stack, "Caller", assumed_by=iam.AccountRootPrincipal())
        scaled.grant_invoke(caller)
        return Template.from_stack(stack)

    def test_endpoint_config_variant(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::SageMaker::EndpointConfig",
            {
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": Match.any_value(),
                        "InstanceType": "ml.g5.12xlarge",
                        "InitialInstanceCount": 2,
                        "InitialVariantWeight": 1,
                        "ContainerStartupHealthCheckTimeoutInSeconds": 3600,
                        "ModelDataDownloadTimeoutInSeconds": 3600,
                        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
                    }
                ]
            },
        )

    def test_volume_size_only_on_ebs_instances(self, template: Template) -> None:
        configs = template.find_resources("AWS::SageMaker::EndpointConfig")
        volumes = {
            c["Properties"]["ProductionVariants"][0]["InstanceType"]: c["Properties"][
                "ProductionVariants"
            ][0].get("VolumeSizeInGB")
            for c in configs.values()
        }
        assert volumes == {"ml.g5.12xlarge": None, "ml.p3.8xlarge": 200}

    def test_model_container_environment(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::SageMaker::Model",
            {
                "PrimaryContainer": {
                    "Image": Match.any_value(),
                    "ModelDataSource": {
                        "S3DataSource": {
                            "S3Uri": Match.any_value(),
                            "S3DataType": "S3Prefix",
                            "CompressionType": "None",
                        }
                    },
                    "Environment": {
                        "SERVING_PROPERTIES_PATH": Match.string_like_regexp(
                            r"^/opt/ml/model/serving/chat-[0-9a-f]{64}/serving\.properties$"
                        ),
                        "OPTION_MODEL_ID": "/opt/ml/model",
                        "OPTION_TENSOR_PARALLEL_DEGREE": "4",
                        "OPTION_MAX_MODEL_LEN": "2048",
                        "OPTION_DTYPE": "float16",
                        "OPTION_GPU_MEMORY_UTILIZATION": "0.9",
                        "OPTION_ENABLE_PREFIX_CACHING": "true",
                        "OPTION_MAX_NEW_TOKENS_CAP": "1024",
                    },
                },
                "EnableNetworkIsolation": False,
                "VpcConfig": Match.absent(),
            },
        )
        models = template.find_resources("AWS::SageMaker::Model")
        sources = [
            json.dumps(m["Properties"]["PrimaryContainer"]["ModelDataSource"])
            for m in models.values()
        ]
        assert sources
        assert all("/models/gpt-neoxt-chat-base-20b/" in m for m in sources)

    def test_endpoint_name(self, template: Template) -> None:
        template.has_resource_properties(
            "AWS::SageMaker::Endpoint", {"EndpointName": "chatbot-test-chat"}
        )

    def test_autoscaling_on_concurrency_where_configured(self, template: Template) -> None:
        targets = template.find_resources("AWS::ApplicationAutoScaling::ScalableTarget")
        assert len(targets) == 1
        roles = json.dumps(template.find_resources("AWS::IAM::Role"))
        assert "application-autoscaling" not in roles
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalableTarget",
            {
                "ResourceId": "endpoint/chatbot-test-chat/variant/AllTraffic",
                "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "ServiceNamespace": "sagemaker",
                "MinCapacity": 2,
                "MaxCapacity": 8,
                "RoleARN": Match.absent(),
            },
        )
        template.has_resource_properties(
            "AWS::ApplicationAutoScaling::ScalingPolicy",
            {
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": Match.object_like(
                    {
                        "TargetValue": 8,
                        "PredefinedMetricSpecification": {
                            "PredefinedMetricType": (
                                "SageMakerVariantConcurrentRequestsPerModelHighResolution"
                            )
                        },
                    }
                ),
            },
        )

    def test_alarms_on_5xx_and_latency(self, template: Template) -> None:
        for metric in ("Invocation5XXErrors", "ModelLatency"):
            template.has_resource_properties(
                "AWS::CloudWatch::Alarm",
                {
                    "Namespace": "AWS/SageMaker",
                    "MetricName": metric,
                    "Dimensions": Match.array_with(
                        [{"Name": "EndpointName", "Value": "chatbot-test-chat"}]
                    ),
                },
            )

    def test_execution_role_is_least_privilege(self, template: Template) -> None:
        roles = template.find_resources(
            "AWS::IAM::Role",
            {
                "Properties": {
                    "Description": Match.string_like_regexp("^Execution role of SageMaker")
                }
            },
        )
        assert len(roles) == 2
        assert all("ManagedPolicyArns" not in r["Properties"] for r in roles.values())
        statements = [
            statement
            for policy in template.find_resources("AWS::IAM::Policy").values()
            if {role["Ref"] for role in policy["Properties"]["Roles"]} <= set(roles)
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        ]
        by_action = {a: s for s in statements for a in _actions(s)}
        assert "ecr:BatchGetImage" in by_action
        assert "container-assets" in json.dumps(by_action["ecr:BatchGetImage"]["Resource"])
        assert by_action["cloudwatch:PutMetricData"]["Condition"] == {
            "StringEquals": {"cloudwatch:namespace": "/aws/sagemaker/Endpoints"}
        }
        logs = sorted(
            json.dumps(s["Resource"]) for s in statements if "logs:PutLogEvents" in _actions(s)
        )
        assert len(logs) == 2
        assert "Endpoints/chatbot-test-chat:log-stream:*" in logs[0]
        assert "Endpoints/chatbot-test-ebs:log-stream:*" in logs[1]
        # One read, of the served weights prefix (the staged artifacts lie beneath it).
        weights_reads = [
            json.dumps(s["Resource"]) for s in statements if _actions(s) == ["s3:GetObject"]
        ]
        assert weights_reads
        assert all(r.endswith('/models/gpt-neoxt-chat-base-20b/*"]]}') for r in weights_reads)
        assert all(not any(a.endswith("*") for a in _actions(s)) for s in statements)

    def test_grant_invoke_covers_streaming_on_this_endpoint_only(self, template: Template) -> None:
        statements = _policy_statements(template)
        invoke = [s for s in statements if "sagemaker:InvokeEndpoint" in _actions(s)]
        assert len(invoke) == 1
        assert sorted(_actions(invoke[0])) == [
            "sagemaker:InvokeEndpoint",
            "sagemaker:InvokeEndpointWithResponseStream",
        ]
        endpoints = template.find_resources(
            "AWS::SageMaker::Endpoint", {"Properties": {"EndpointName": "chatbot-test-chat"}}
        )
        assert invoke[0]["Resource"] == {"Ref": next(iter(endpoints))}


class TestFrontDoorApi:
    @pytest.fixture(scope="class")
    @classmethod
    def templates(
        cls, cdk_json_context: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
    ) -> dict[str, Template]:
        root = tmp_path_factory.mktemp("front-door")
        result = {}
        for env in ("dev", "prod"):  # dev: IAM auth, prod: Cognito
            config = load_environment(cdk_json_context, env)
            stack = Stack(App())
            bucket = ModelAssetsBucket(stack, "Assets", env_name=env, protect_data=False)
            table = SessionTable(stack, "Sessions", protect_data=False)
            image = ecr_assets.DockerImageAsset(
                stack,
                "Image",
                directory=str(REPO_ROOT / "container"),
                build_args={"BASE_IMAGE": "example/base:1"},
            )
            endpoints = {}
            for role, settings in (("chat", config.chat), ("moderation", config.moderation)):
                artifacts = ServingArtifacts(
                    stack,
                    f"{role}Artifacts",
                    source_dir=_artifact_dir(root / env, role),
                    role=role,
                    assets_bucket=bucket,
                    weights_prefix=settings.model.serving_prefix,
                )
                endpoints[role] = LlmEndpoint(
                    stack,
                    f"{role}Endpoint",
                    endpoint_name=config.endpoint_names[role],
                    settings=settings,
                    image=image,
                    artifacts=artifacts,
                    assets_bucket=bucket,
                )
            FrontDoorApi(
                stack,
                "FrontDoor",
                env_name=env,
                settings=config.front_door,
                code_dir=REPO_ROOT / "lambda",
                chat=endpoints["chat"],
                moderation=endpoints["moderation"],
                sessions=table,
                wake_retry_after_s=300,
            )
            result[env] = Template.from_stack(stack)
        return result

    def test_function_is_arm64_image_with_web_adapter_settings(
        self, templates: dict[str, Template]
    ) -> None:
        templates["dev"].has_resource_properties(
            "AWS::Lambda::Function",
            {
                "PackageType": "Image",
                "Architectures": ["arm64"],
                "Timeout": 900,
                "ReservedConcurrentExecutions": 10,
                "LoggingConfig": Match.object_like({"LogFormat": "JSON"}),
                "Environment": {
                    "Variables": Match.object_like(
                        {
                            "CHATBOT_CHAT_ENDPOINT": "chatbot-dev-chat",
                            "CHATBOT_MODERATION_ENDPOINT": "chatbot-dev-moderation",
                            "CHATBOT_SESSION_TABLE": Match.any_value(),
                            "CHATBOT_SESSION_OWNER_INDEX": "by-owner",
                            "CHATBOT_SESSION_TTL_DAYS": "7",
                            "CHATBOT_BLOCKED_LABELS": '["needs caution", "needs intervention"]',
                            "CHATBOT_AUTH_MODE": "iam",
                            "AWS_LWA_INVOKE_MODE": "response_stream",
                            "AWS_LWA_PORT": "8080",
                            "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
                        }
                    )
                },
            },
        )
        templates["prod"].has_resource_properties(
            "AWS::Lambda::Function", {"ReservedConcurrentExecutions": 100}
        )

    def test_chat_route_streams_with_fifteen_minute_timeout(
        self, templates: dict[str, Template]
    ) -> None:
        templates["dev"].has_resource_properties(
            "AWS::ApiGateway::Method",
            {
                "HttpMethod": "POST",
                "AuthorizationType": "AWS_IAM",
                "Integration": Match.object_like(
                    {
                        "Type": "AWS_PROXY",
                        "ResponseTransferMode": "STREAM",
                        "TimeoutInMillis": 900000,
                        "Uri": Match.any_value(),
                    }
                ),
            },
        )
        uri = json.dumps(
            next(
                m["Properties"]["Integration"]["Uri"]
                for m in templates["dev"].find_resources("AWS::ApiGateway::Method").values()
                if m["Properties"]["HttpMethod"] == "POST"
            )
        )
        assert "response-streaming-invocations" in uri

    def test_routes_and_auth_modes(self, templates: dict[str, Template]) -> None:
        paths = sorted(
            r["Properties"]["PathPart"]
            for r in templates["dev"].find_resources("AWS::ApiGateway::Resource").values()
        )
        assert paths == [
            "chat",
            "completions",
            "healthz",
            "models",
            "sessions",
            "v1",
            "{id}",
            "{id}",
        ]
        for env, auth in (("dev", "AWS_IAM"), ("prod", "COGNITO_USER_POOLS")):
            methods = templates[env].find_resources("AWS::ApiGateway::Method").values()
            verbs = sorted(m["Properties"]["HttpMethod"] for m in methods)
            assert verbs == ["DELETE", "GET", "GET", "GET", "GET", "GET", "POST"]
            assert {m["Properties"]["AuthorizationType"] for m in methods} == {auth}
        templates["prod"].has_resource_properties(
            "AWS::ApiGateway::Authorizer", {"Type": "COGNITO_USER_POOLS"}
        )
        templates["prod"].resource_count_is("AWS::Cognito::UserPool", 1)
        templates["dev"].resource_count_is("AWS::Cognito::UserPool", 0)

    def test_stage_throttles_and_writes_json_access_logs(
        self, templates: dict[str, Template]
    ) -> None:
        templates["dev"].has_resource_properties(
            "AWS::ApiGateway::Stage",
            {
                "StageName": "api",
                "AccessLogSetting": {
                    "DestinationArn": Match.any_value(),
                    "Format": Match.string_like_regexp(r'^\{"requestId":'),
                },
                "MethodSettings": Match.array_with(
                    [Match.object_like({"ThrottlingRateLimit": 5, "ThrottlingBurstLimit": 10})]
                ),
            },
        )

    def test_function_role_invokes_exactly_the_two_endpoints(
        self, templates: dict[str, Template]
    ) -> None:
        statements = _policy_statements(templates["dev"])
        invoke = [s for s in statements if "sagemaker:InvokeEndpoint" in _actions(s)]
        resources = []
        for statement in invoke:
            assert sorted(_actions(statement)) == [
                "sagemaker:InvokeEndpoint",
                "sagemaker:InvokeEndpointWithResponseStream",
            ]
            value = statement["Resource"]
            resources.extend(value if isinstance(value, list) else [value])
        logical_ids = sorted(r["Ref"] for r in resources)
        endpoints = sorted(templates["dev"].find_resources("AWS::SageMaker::Endpoint"))
        assert logical_ids == endpoints
