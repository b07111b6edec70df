"""L3 construct: the customization pipeline, a Step Functions state machine over SageMaker jobs."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks
from constructs import Construct

from stacks.constructs.customization_asl import CUSTOMIZATION_PREFIX, RunLocations, states_format
from stacks.constructs.customization_iam import grant_state_machine, job_role, sagemaker_arn
from stacks.constructs.customization_jobs import (
    JobNetwork,
    JobSettings,
    evaluate_state,
    train_state,
    validate_state,
)
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.private_network import PrivateNetwork

__all__ = ["CUSTOMIZATION_PREFIX", "CustomizationPipeline"]


class CustomizationPipeline(Construct):
    """Validate data, train, evaluate, and register the model package for review.

    An execution takes ``{"run_id": "...", "mode": "fine-tuning"|"continued-pre-training",
    "hyperparameters": {"mode": "...", ...}}``; the dataset is the JSONL under
    ``customization/datasets/<run_id>/`` in the model-assets bucket, and everything the run
    produces lands under ``customization/runs/<run_id>/``. The run ends with a model package
    in ``PendingManualApproval`` whose inference specification points at the merged weights
    (an uncompressed S3 prefix); it never touches an endpoint. Promotion is a reviewed change to
    cdk.json (``make promote``) rolled out by ``cdk deploy``.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name: names the jobs and the model package group.
    assets_bucket:
        The model-assets bucket (datasets, outputs, base weights).
    base_weights_name:
        Folder under ``models/`` holding the base model the run customizes.
    training_image:
        Image with the ``customize`` package (training, validation and evaluation jobs).
    serving_image:
        The inference container image, named in the model package's inference specification.
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
    network:
        The environment's private network, where it has one: the jobs then run in its
        subnets, network-isolated, in a client group of their own.
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
        training_instance_type: str = "ml.g5.2xlarge",
        evaluation_instance_type: str = "ml.g5.xlarge",
        processing_instance_type: str = "ml.m5.xlarge",
        use_spot: bool = False,
        training_hyperparameters: Mapping[str, str] | None = None,
        evaluation_tensor_parallel_degree: int = 1,
        evaluation_max_model_len: int = 2048,
        max_training_time: Duration | None = None,
        network: PrivateNetwork | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.name_prefix = f"chatbot-{env_name}-cust"
        self.assets_bucket = assets_bucket
        self.base_weights_name = base_weights_name
        self.use_spot = use_spot
        group_name = f"chatbot-{env_name}-chat"

        self.model_package_group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=group_name,
            model_package_group_description="Customized chat models with their evaluation",
        )
        self.job_role = job_role(
            self,
            assets_bucket=assets_bucket,
            base_weights_name=base_weights_name,
            training_image=training_image,
        )
        # The run id comes from the execution input, so names and S3 URIs are built at run
        # time with States.Format.
        run = RunLocations(bucket=assets_bucket.bucket_physical_name, name_prefix=self.name_prefix)
        job_network = None
        if network is not None:
            self.jobs_security_group = network.add_client(
                "CustomizationJobsSecurityGroup", "customization jobs (network-isolated)"
            )
            network.grant_eni_management(self.job_role, service="sagemaker")
            job_network = JobNetwork(
                subnet_ids=tuple(subnet.subnet_id for subnet in network.subnets),
                security_group_id=self.jobs_security_group.security_group_id,
            )
        jobs = JobSettings(
            run=run,
            role_arn=self.job_role.role_arn,
            image_uri=training_image.image_uri,
            base_uri=assets_bucket.model_uri(base_weights_name),
            key_arn=assets_bucket.key.key_arn,
            network=job_network,
        )
        validate = validate_state(self, jobs, instance_type=processing_instance_type)
        train = train_state(
            self,
            jobs,
            instance_type=training_instance_type,
            use_spot=use_spot,
            default_hyperparameters=training_hyperparameters or {},
            max_training_time=max_training_time or Duration.hours(8),
        )
        evaluate = evaluate_state(
            self,
            jobs,
            instance_type=evaluation_instance_type,
            tensor_parallel_degree=evaluation_tensor_parallel_degree,
            max_model_len=evaluation_max_model_len,
        )
        register = self._register(run, group_name, serving_image)
        # The execution's output is what `make promote` needs, and where the weights are.
        registered = sfn.Pass(
            self,
            "Registered",
            comment="Pending manual approval; promote with make promote (docs/customize.md)",
            parameters={
                "model_package_arn": sfn.JsonPath.string_at("$.package.arn"),
                "approval_status": "PendingManualApproval",
                "weights_uri": run.model_uri(raw=False),
            },
        )
        definition = validate.next(train).next(evaluate).next(register).next(registered)

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
            timeout=Duration.days(2),
        )
        grant_state_machine(
            self.state_machine,
            name_prefix=self.name_prefix,
            package_group=group_name,
            jobs_role=self.job_role,
        )

    def _register(
        self, run: RunLocations, group_name: str, serving_image: ecr_assets.DockerImageAsset
    ) -> tasks.CallAwsService:
        register = tasks.CallAwsService(
            self,
            "Register",
            service="sagemaker",
            action="createModelPackage",
            iam_action="sagemaker:CreateModelPackage",
            iam_resources=[
                sagemaker_arn("model-package-group", group_name),
                sagemaker_arn("model-package", f"{group_name}/*"),
            ],
            parameters={
                "ModelPackageGroupName": group_name,
                "ModelPackageDescription": states_format(
                    "{} run {}", "$.mode", "$.run_id", raw=False
                ),
                "ModelApprovalStatus": "PendingManualApproval",
                "InferenceSpecification": {
                    "Containers": [
                        {
                            "Image": serving_image.image_uri,
                            "ModelDataSource": {
                                "S3DataSource": {
                                    "S3Uri": run.model_uri(raw=False),
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
                            "S3Uri": run.uri("evaluation", "evaluation.json", raw=False),
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
        return register
