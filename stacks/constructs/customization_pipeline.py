"""L3 construct: the customization pipeline, a Step Functions state machine over SageMaker jobs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_cdk import Acknowledgment, Aws, Duration, RemovalPolicy, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from chatbot_contracts.training import (
    HP_CHECKPOINT_STEPS,
    METRIC_DEFINITIONS,
    SPOT_CHECKPOINT_STEPS,
)
from stacks.constructs.llm_endpoint import VARIANT_NAME, LlmEndpoint
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.nag_ids import nag_resource_id

__all__ = ["CUSTOMIZATION_PREFIX", "CustomizationPipeline"]

CUSTOMIZATION_PREFIX = "customization/"
_DATASETS = f"{CUSTOMIZATION_PREFIX}datasets/"
_RUNS = f"{CUSTOMIZATION_PREFIX}runs/"
_PROCESSING = "/opt/ml/processing"
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class CustomizationPipeline(Construct):
    """Validate data, train, evaluate, register, and on approval roll the chat endpoint.

    An execution takes ``{"run_id": "...", "mode": "fine-tuning"|"continued-pre-training",
    "hyperparameters": {"mode": "...", ...}}``; the dataset is the JSONL under
    ``customization/datasets/<run_id>/`` in the model-assets bucket, and everything the run
    produces lands under ``customization/runs/<run_id>/``.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name: names the jobs, models and the model package group.
    assets_bucket:
        The model-assets bucket (datasets, outputs, base weights).
    base_weights_name:
        Folder under ``models/`` holding the base model the run customizes.
    training_image:
        Image with the ``customize`` package (training, validation and evaluation jobs).
    serving_image:
        The inference container image the chat endpoint runs.
    chat_endpoint:
        The endpoint a approved model is rolled out to, blue/green, with its alarms as
        rollback triggers.
    chat_model_data_url:
        The chat role's artifact (``serving.properties``) for the new SageMaker Model.
    training_instance_type, evaluation_instance_type, processing_instance_type:
        GPU instance for training and evaluation; CPU instance for data validation.
    use_spot:
        Managed spot training, with checkpoints under the run's prefix.
    training_hyperparameters:
        Default hyperparameters of every run (the environment's training settings); the
        execution input's ``hyperparameters`` override them.
    evaluation_tensor_parallel_degree, evaluation_max_model_len:
        The chat endpoint's vLLM settings, with which the evaluation job generates.
    max_training_time:
        Training job limit (and spot wait limit: twice that).
    approval_poll_interval:
        How often the model package's approval status is read.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        assets_bucket: ModelAssetsBucket,
        base_weights_name: str,
        training_image: ecr_assets.DockerImageAsset,
        serving_image: ecr_assets.DockerImageAsset,
        chat_endpoint: LlmEndpoint,
        chat_model_data_url: str,
        training_instance_type: str = "ml.g5.2xlarge",
        evaluation_instance_type: str = "ml.g5.xlarge",
        processing_instance_type: str = "ml.m5.xlarge",
        use_spot: bool = False,
        training_hyperparameters: Mapping[str, str] | None = None,
        evaluation_tensor_parallel_degree: int = 1,
        evaluation_max_model_len: int = 2048,
        max_training_time: Duration | None = None,
        approval_poll_interval: Duration | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = f"chatbot-{env_name}-cust"
        self.assets_bucket = assets_bucket
        self.base_weights_name = base_weights_name
        self.use_spot = use_spot
        max_training = max_training_time or Duration.hours(8)
        poll = approval_poll_interval or Duration.minutes(10)
        bucket = assets_bucket.bucket_physical_name

        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=f"chatbot-{env_name}-chat",
            model_package_group_description="Customized chat models with their evaluation",
        )
        self.job_role = self._job_role(training_image)
        self._grant_chat_role_read(chat_endpoint)

        # The run id comes from the execution input, so names and S3 URIs are built at run
        # time with States.Format: raw intrinsic strings in the SageMaker job states (custom
        # states, rendered by _render), JsonPath tokens in the SDK-integration tasks.
        def uri(*parts: str, raw: bool = True) -> str:
            return _format(f"s3://{bucket}/{_RUNS}{{}}/" + "/".join(parts), "$.run_id", raw=raw)

        def name(suffix: str, *, raw: bool = True) -> str:
            return _format(f"{self.name_prefix}-{{}}-{suffix}", "$.run_id", raw=raw)

        def model_uri(*, raw: bool) -> str:
            return _format(
                f"s3://{bucket}/{_RUNS}{{}}/training/{self.name_prefix}-{{}}-train/output/model/",
                "$.run_id",
                "$.run_id",
                raw=raw,
            )

        base_uri = assets_bucket.model_uri(base_weights_name)
        key_arn = assets_bucket.key.key_arn

        validate = sfn.CustomState(
            self,
            "ValidateData",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Aws.PARTITION}:states:::sagemaker:createProcessingJob.sync",
                "Parameters": _render(
                    {
                        "ProcessingJobName": name("validate"),
                        "RoleArn": self.job_role.role_arn,
                        "AppSpecification": {
                            "ImageUri": training_image.image_uri,
                            "ContainerEntrypoint": [
                                "python3",
                                "-m",
                                "customize",
                                "prepare",
                                "split",
                            ],
                            "ContainerArguments": _array(
                                f"{_PROCESSING}/input/data/data.jsonl",
                                "--mode",
                                "$.mode",
                                "--tokenizer",
                                f"{_PROCESSING}/input/base",
                                "--out-dir",
                                f"{_PROCESSING}/output",
                            ),
                        },
                        "ProcessingInputs": [
                            _processing_input(
                                "data",
                                _format(f"s3://{bucket}/{_DATASETS}{{}}/", "$.run_id", raw=True),
                                f"{_PROCESSING}/input/data",
                            ),
                            _processing_input("base", base_uri, f"{_PROCESSING}/input/base"),
                        ],
                        "ProcessingOutputConfig": {
                            "KmsKeyId": key_arn,
                            "Outputs": [
                                {
                                    "OutputName": "prepared",
                                    "S3Output": {
                                        "S3Uri": uri("prepared"),
                                        "LocalPath": f"{_PROCESSING}/output",
                                        "S3UploadMode": "EndOfJob",
                                    },
                                }
                            ],
                        },
                        "ProcessingResources": _cluster(processing_instance_type),
                        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                        "Environment": _OFFLINE_ENV,
                    }
                ),
                "ResultPath": None,
            },
        )

        stopping: dict[str, Any] = {"MaxRuntimeInSeconds": int(max_training.to_seconds())}
        spot: dict[str, Any] = {}
        if use_spot:
            stopping["MaxWaitTimeInSeconds"] = 2 * int(max_training.to_seconds())
            spot = {
                "EnableManagedSpotTraining": True,
                "CheckpointConfig": {
                    "S3Uri": uri("checkpoints"),
                    "LocalPath": "/opt/ml/checkpoints",
                },
            }
        # Spot jobs checkpoint every 50 steps, and every run gets the environment's training
        # settings, unless the execution input says otherwise (braces in intrinsic string
        # literals are escaped, as the ASL requires).
        defaults = {HP_CHECKPOINT_STEPS: str(SPOT_CHECKPOINT_STEPS)} if use_spot else {}
        defaults.update(training_hyperparameters or {})
        escaped = json.dumps(defaults).replace("{", "\\{").replace("}", "\\}")
        hyperparameters = (
            f"States.JsonMerge(States.StringToJson('{escaped}'), $.hyperparameters, false)"
            if defaults
            else "$.hyperparameters"
        )
        train = sfn.CustomState(
            self,
            "Train",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Aws.PARTITION}:states:::sagemaker:createTrainingJob.sync",
                "Parameters": _render(
                    {
                        "TrainingJobName": name("train"),
                        "RoleArn": self.job_role.role_arn,
                        "AlgorithmSpecification": {
                            "TrainingImage": training_image.image_uri,
                            "TrainingInputMode": "File",
                            "ContainerEntrypoint": ["python3", "-m", "customize.train"],
                            "MetricDefinitions": [dict(item) for item in METRIC_DEFINITIONS],
                        },
                        "HyperParameters": hyperparameters,
                        "InputDataConfig": [
                            _channel("train", uri("prepared", "train")),
                            _channel("validation", uri("prepared", "validation")),
                            _channel("model", base_uri),
                        ],
                        # Uncompressed output: the model folder is an S3 prefix the chat
                        # container downloads as OPTION_MODEL_ID, no tarball in between.
                        "OutputDataConfig": {
                            "S3OutputPath": uri("training"),
                            "KmsKeyId": key_arn,
                            "CompressionType": "NONE",
                        },
                        "ResourceConfig": {
                            "InstanceType": training_instance_type,
                            "InstanceCount": 1,
                            "VolumeSizeInGB": 200,
                        },
                        "StoppingCondition": stopping,
                        "Environment": _OFFLINE_ENV,
                        **spot,
                    }
                ),
                "ResultPath": None,
            },
        )

        evaluate = sfn.CustomState(
            self,
            "Evaluate",
            state_json={
                "Type": "Task",
                "Resource": f"arn:{Aws.PARTITION}:states:::sagemaker:createProcessingJob.sync",
                "Parameters": _render(
                    {
                        "ProcessingJobName": name("evaluate"),
                        "RoleArn": self.job_role.role_arn,
                        "AppSpecification": {
                            "ImageUri": training_image.image_uri,
                            "ContainerEntrypoint": ["python3", "-m", "customize", "evaluate"],
                            # --require-improvement: a model that does not beat the base
                            # fails the job, and the run stops before registration.
                            "ContainerArguments": _array(
                                "--mode",
                                "$.mode",
                                "--data",
                                f"{_PROCESSING}/input/data/validation.jsonl",
                                "--base-model",
                                f"{_PROCESSING}/input/base",
                                "--customized-model",
                                f"{_PROCESSING}/input/model",
                                "--out-dir",
                                f"{_PROCESSING}/output",
                                "--device",
                                "cuda",
                                # Generation as the chat endpoint serves: vLLM, its degree.
                                "--engine",
                                "vllm",
                                "--tensor-parallel-degree",
                                str(evaluation_tensor_parallel_degree),
                                "--max-model-len",
                                str(evaluation_max_model_len),
                                "--require-improvement",
                            ),
                        },
                        "ProcessingInputs": [
                            _processing_input(
                                "data", uri("prepared", "validation"), f"{_PROCESSING}/input/data"
                            ),
                            _processing_input("base", base_uri, f"{_PROCESSING}/input/base"),
                            _processing_input(
                                "model", model_uri(raw=True), f"{_PROCESSING}/input/model"
                            ),
                        ],
                        "ProcessingOutputConfig": {
                            "KmsKeyId": key_arn,
                            "Outputs": [
                                {
                                    "OutputName": "evaluation",
                                    "S3Output": {
                                        "S3Uri": uri("evaluation"),
                                        "LocalPath": f"{_PROCESSING}/output",
                                        "S3UploadMode": "EndOfJob",
                                    },
                                }
                            ],
                        },
                        "ProcessingResources": _cluster(evaluation_instance_type),
                        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
                        "Environment": _OFFLINE_ENV,
                    }
                ),
                "ResultPath": None,
            },
        )

        package_arn_pattern = self._arn("model-package", f"chatbot-{env_name}-chat/*")
        register = tasks.CallAwsService(
            self,
            "Register",
            service="sagemaker",
            action="createModelPackage",
            iam_action="sagemaker:CreateModelPackage",
            iam_resources=[
                self._arn("model-package-group", f"chatbot-{env_name}-chat"),
                package_arn_pattern,
            ],
            parameters={
                "ModelPackageGroupName": self.model_package_group.model_package_group_name,
                "ModelPackageDescription": _format("{} run {}", "$.mode", "$.run_id", raw=False),
                "ModelApprovalStatus": "PendingManualApproval",
                "InferenceSpecification": {
                    "Containers": [
                        {
                            "Image": serving_image.image_uri,
                            "ModelDataSource": {
                                "S3DataSource": {
                                    "S3Uri": model_uri(raw=False),
                                    "S3DataType": "S3Prefix",
                                    "CompressionType": "None",
                                }
                            },
                        }
                    ],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json", "application/jsonlines"],
                },
                "ModelMetrics": {
                    "ModelQuality": {
                        "Statistics": {
                            "ContentType": "application/json",
                            "S3Uri": uri("evaluation", "evaluation.json", raw=False),
                        }
                    }
                },
                "CustomerMetadataProperties": {
                    "run_id": sfn.JsonPath.string_at("$.run_id"),
                    "mode": sfn.JsonPath.string_at("$.mode"),
                },
            },
            result_selector={"arn": sfn.JsonPath.string_at("$.ModelPackageArn")},
            result_path="$.package",
        )
        register.node.add_dependency(self.model_package_group)

        wait = sfn.Wait(self, "WaitForApproval", time=sfn.WaitTime.duration(poll))
        check = tasks.CallAwsService(
            self,
            "ReadApproval",
            service="sagemaker",
            action="describeModelPackage",
            iam_action="sagemaker:DescribeModelPackage",
            iam_resources=[package_arn_pattern],
            parameters={"ModelPackageName": sfn.JsonPath.string_at("$.package.arn")},
            result_selector={"status": sfn.JsonPath.string_at("$.ModelApprovalStatus")},
            result_path="$.approval",
        )

        environment = dict(chat_endpoint.container_environment(assets_bucket))
        environment["OPTION_MODEL_ID"] = model_uri(raw=False)
        create_model = tasks.CallAwsService(
            self,
            "CreateModel",
            service="sagemaker",
            action="createModel",
            iam_action="sagemaker:CreateModel",
            iam_resources=[self._arn("model", f"{self.name_prefix}-*")],
            parameters={
                "ModelName": name("model", raw=False),
                "ExecutionRoleArn": chat_endpoint.role.role_arn,
                "PrimaryContainer": {
                    "Image": serving_image.image_uri,
                    "ModelDataUrl": chat_model_data_url,
                    "Environment": environment,
                },
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        create_config = tasks.CallAwsService(
            self,
            "CreateEndpointConfig",
            service="sagemaker",
            action="createEndpointConfig",
            iam_action="sagemaker:CreateEndpointConfig",
            iam_resources=[self._arn("endpoint-config", f"{self.name_prefix}-*")],
            parameters={
                "EndpointConfigName": name("config", raw=False),
                "ProductionVariants": [_variant(chat_endpoint, name("model", raw=False))],
            },
            result_path=sfn.JsonPath.DISCARD,
        )
        roll_out = tasks.CallAwsService(
            self,
            "RollOut",
            service="sagemaker",
            action="updateEndpoint",
            iam_action="sagemaker:UpdateEndpoint",
            iam_resources=[
                chat_endpoint.endpoint_arn,
                self._arn("endpoint-config", f"{self.name_prefix}-*"),
            ],
            parameters={
                "EndpointName": chat_endpoint.endpoint_name,
                "EndpointConfigName": name("config", raw=False),
                "DeploymentConfig": {
                    # Blue/green: the new fleet takes all traffic, then bakes for ten
                    # minutes while the endpoint's alarms can still roll it back.
                    "BlueGreenUpdatePolicy": {
                        "TrafficRoutingConfiguration": {
                            "Type": "ALL_AT_ONCE",
                            "WaitIntervalInSeconds": 600,
                        },
                        "TerminationWaitInSeconds": 600,
                        "MaximumExecutionTimeoutInSeconds": 3600,
                    },
                    "AutoRollbackConfiguration": {
                        "Alarms": [
                            {"AlarmName": alarm.alarm_name} for alarm in chat_endpoint.alarms
                        ]
                    },
                },
            },
            result_path=sfn.JsonPath.DISCARD,
        )

        rejected = sfn.Succeed(self, "Rejected", comment="Model package rejected; nothing deployed")
        deployed = sfn.Succeed(self, "Deployed")
        decide = (
            sfn.Choice(self, "Approved?")
            .when(
                sfn.Condition.string_equals("$.approval.status", "Approved"),
                create_model.next(create_config).next(roll_out).next(deployed),
            )
            .when(sfn.Condition.string_equals("$.approval.status", "Rejected"), rejected)
            .otherwise(wait)
        )
        definition = (
            validate.next(train).next(evaluate).next(register).next(wait).next(check).next(decide)
        )

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=logs.RetentionDays.ONE_YEAR,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=f"chatbot-{env_name}-customization",
            definition_body=sfn.DefinitionBody.from_chainable(definition),
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL),
            tracing_enabled=True,
            timeout=Duration.days(7),
        )
        self._grant_state_machine(chat_endpoint)

    def _arn(self, resource_type: str, name: str) -> str:
        return f"arn:{Aws.PARTITION}:sagemaker:{Aws.REGION}:{Aws.ACCOUNT_ID}:{resource_type}/{name}"

    def _job_role(self, training_image: ecr_assets.DockerImageAsset) -> iam.Role:
        role = iam.Role(
            self,
            "JobRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Customization jobs: read datasets and base weights, write run outputs",
        )
        bucket = self.assets_bucket
        training_image.repository.grant_pull(role)
        bucket.grant_read_model(role, self.base_weights_name)
        # ARNs built from the bucket's name, as the endpoints' grants are: no cross-stack export.
        datasets, runs = f"{bucket.bucket_arn}/{_DATASETS}*", f"{bucket.bucket_arn}/{_RUNS}*"
        role.add_to_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[datasets, runs])
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[runs]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{_DATASETS}*", f"{_RUNS}*"]}},
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
                resources=[bucket.key.key_arn],
            )
        )
        log_streams = []
        for kind in ("ProcessingJobs", "TrainingJobs"):
            group = (
                f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}"
                f":log-group:/aws/sagemaker/{kind}"
            )
            log_streams.append(f"{group}:log-stream:*")
            role.add_to_policy(
                iam.PolicyStatement(
                    actions=[
                        "logs:CreateLogGroup",
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogStreams",
                    ],
                    resources=[group, f"{group}:log-stream:*"],
                )
            )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}},
            )
        )
        acknowledgments = [
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", datasets),
                reason="Read-only: datasets are uploaded per run under customization/datasets/; "
                "their names are not known at synth.",
            ),
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", runs),
                reason="Jobs write their outputs (prepared data, checkpoints, model, evaluation) "
                "under customization/runs/<run id>/, a run chosen at execution time.",
            ),
            Acknowledgment(
                id=nag_resource_id(
                    "AwsSolutions-IAM5", bucket.model_objects_arn(self.base_weights_name)
                ),
                reason="Read-only access confined to the base model's weights prefix; file "
                "names in a snapshot are unknown at synth.",
            ),
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no "
                "resource-level permissions; PutMetricData is confined by a namespace "
                "condition to SageMaker's job namespaces.",
            ),
        ]
        acknowledgments += [
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", streams),
                reason="Log stream names are chosen by SageMaker per job at run time; the grant "
                "is confined to SageMaker's job log group.",
            )
            for streams in log_streams
        ]
        Validations.of(role).acknowledge(*acknowledgments)
        return role

    def _grant_chat_role_read(self, chat_endpoint: LlmEndpoint) -> None:
        # The rolled-out model downloads its weights from the run's training output.
        bucket = self.assets_bucket
        chat_endpoint.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[f"{bucket.bucket_arn}/{_RUNS}*"]
            )
        )
        chat_endpoint.role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{_RUNS}*"]}},
            )
        )
        Validations.of(chat_endpoint.role).acknowledge(
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", f"{bucket.bucket_arn}/{_RUNS}*"),
                reason="Read-only access to customization run outputs, from which an approved "
                "customized model's weights are served.",
            )
        )

    def _grant_state_machine(self, chat_endpoint: LlmEndpoint) -> None:
        machine = self.state_machine
        jobs = [
            self._arn("processing-job", f"{self.name_prefix}-*"),
            self._arn("training-job", f"{self.name_prefix}-*"),
        ]
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "sagemaker:CreateProcessingJob",
                    "sagemaker:DescribeProcessingJob",
                    "sagemaker:StopProcessingJob",
                    "sagemaker:CreateTrainingJob",
                    "sagemaker:DescribeTrainingJob",
                    "sagemaker:StopTrainingJob",
                    "sagemaker:AddTags",
                ],
                resources=jobs,
            )
        )
        # .sync integrations follow job state through these Step Functions-managed rules.
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    f"arn:{Aws.PARTITION}:events:{Aws.REGION}:{Aws.ACCOUNT_ID}:rule/"
                    f"StepFunctionsGetEventsForSageMaker{kind}JobsRule"
                    for kind in ("Processing", "Training")
                ],
            )
        )
        machine.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[self.job_role.role_arn, chat_endpoint.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )
        patterns = {
            "processing-job": f"{self.name_prefix}-*",
            "training-job": f"{self.name_prefix}-*",
            "model": f"{self.name_prefix}-*",
            "endpoint-config": f"{self.name_prefix}-*",
            "model-package": f"{self.model_package_group.model_package_group_name}/*",
        }
        Validations.of(machine).acknowledge(
            *[
                Acknowledgment(
                    id=nag_resource_id("AwsSolutions-IAM5", self._arn(kind, pattern)),
                    reason=f"SageMaker {kind}s are named per run at execution time; the wildcard "
                    f"is confined to the '{pattern[:-1]}' prefix of this environment.",
                )
                for kind, pattern in patterns.items()
            ],
            Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="X-Ray tracing actions of the state machine have no resource-level "
                "permissions.",
            ),
        )


def _format(template: str, *paths: str, raw: bool) -> str:
    """``States.Format`` of a template and JSONPaths: raw ASL text, or a CDK JsonPath token."""
    if not raw:
        return sfn.JsonPath.format(template, *[sfn.JsonPath.string_at(path) for path in paths])
    return f"States.Format('{template}', {', '.join(paths)})"


def _array(*items: str) -> str:
    """``States.Array`` in raw ASL text: ``$.`` items are paths, others string literals."""
    rendered = [item if item.startswith("$.") else f"'{item}'" for item in items]
    return f"States.Array({', '.join(rendered)})"


def _render(parameters: dict[str, Any]) -> dict[str, Any]:
    """Turn values that are JSONPath expressions into ``Key.$`` entries, as the ASL wants."""
    rendered: dict[str, Any] = {}
    for key, value in parameters.items():
        if isinstance(value, dict):
            rendered[key] = _render(value)
        elif isinstance(value, list):
            rendered[key] = [_render(item) if isinstance(item, dict) else item for item in value]
        elif isinstance(value, str) and value.startswith(("States.", "$.")):
            rendered[f"{key}.$"] = value
        else:
            rendered[key] = value
    return rendered


def _processing_input(name: str, s3_uri: str, local_path: str) -> dict[str, Any]:
    return {
        "InputName": name,
        "S3Input": {
            "S3Uri": s3_uri,
            "LocalPath": local_path,
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }


def _channel(name: str, s3_uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3Uri": s3_uri,
                "S3DataType": "S3Prefix",
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }


def _cluster(instance_type: str) -> dict[str, Any]:
    return {
        "ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type, "VolumeSizeInGB": 100}
    }


def _variant(chat_endpoint: LlmEndpoint, model_name: str) -> dict[str, Any]:
    settings = chat_endpoint.settings
    variant: dict[str, Any] = {
        "VariantName": VARIANT_NAME,
        "ModelName": model_name,
        "InstanceType": settings.instance.name,
        "InitialInstanceCount": settings.initial_instance_count,
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": (
            settings.container_startup_health_check_timeout_s
        ),
        "ModelDataDownloadTimeoutInSeconds": settings.model_data_download_timeout_s,
        "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"},
    }
    if settings.volume_size_gb is not None:
        variant["VolumeSizeInGB"] = settings.volume_size_gb
    return variant
