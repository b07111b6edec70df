"""Least-privilege roles of the customization pipeline: the jobs' role and the state machine's."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.constructs import pseudo
from stacks.constructs.customization_asl import DATASETS_PREFIX, RUNS_PREFIX
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.nag_ids import nag_resource_id

__all__ = ["JOB_ACTIONS", "grant_state_machine", "job_role", "sagemaker_arn"]

# Everything the state machine may do in SageMaker: run and follow its own jobs, register a
# model package. Nothing that creates models or endpoint configs or updates an endpoint:
# promotion is a reviewed change to cdk.json (docs/customize.md).
JOB_ACTIONS = (
    "sagemaker:CreateProcessingJob",
    "sagemaker:DescribeProcessingJob",
    "sagemaker:StopProcessingJob",
    "sagemaker:CreateTrainingJob",
    "sagemaker:DescribeTrainingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:AddTags",
)


def sagemaker_arn(resource_type: str, name: str) -> str:
    """ARN of a SageMaker resource of this stack's account and region."""
    return pseudo.regional_arn("sagemaker", f"{resource_type}/{name}")


def job_role(
    scope: Construct,
    *,
    assets_bucket: ModelAssetsBucket,
    base_weights_name: str,
    training_image: ecr_assets.DockerImageAsset,
) -> iam.Role:
    """The execution role of the validation, training and evaluation jobs.

    Parameters
    ----------
    scope:
        Where the role is defined (id ``JobRole``).
    assets_bucket:
        The model-assets bucket: datasets and base weights are read, run outputs written.
    base_weights_name:
        Folder under ``models/`` of the base model.
    training_image:
        The jobs image, which the role may pull.

    Returns
    -------
    iam.Role
        The role, its wildcard grants acknowledged one by one.
    """
    role = iam.Role(
        scope,
        "JobRole",
        assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        description="Customization jobs: read datasets and base weights, write run outputs",
    )
    bucket = assets_bucket
    training_image.repository.grant_pull(role)
    bucket.grant_read_model(role, base_weights_name)
    # ARNs built from the bucket's name, as the endpoints' grants are: no cross-stack export.
    datasets = f"{bucket.bucket_arn}/{DATASETS_PREFIX}*"
    runs = f"{bucket.bucket_arn}/{RUNS_PREFIX}*"
    role.add_to_policy(iam.PolicyStatement(actions=["s3:GetObject"], resources=[datasets, runs]))
    role.add_to_policy(
        iam.PolicyStatement(actions=["s3:PutObject", "s3:AbortMultipartUpload"], resources=[runs])
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{DATASETS_PREFIX}*", f"{RUNS_PREFIX}*"]}},
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
        group = pseudo.regional_arn("logs", f"log-group:/aws/sagemaker/{kind}")
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
    Validations.of(role).acknowledge(
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
            id=nag_resource_id("AwsSolutions-IAM5", bucket.model_objects_arn(base_weights_name)),
            reason="Read-only access confined to the base model's weights prefix; file "
            "names in a snapshot are unknown at synth.",
        ),
        Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="ecr:GetAuthorizationToken and cloudwatch:PutMetricData have no "
            "resource-level permissions; PutMetricData is confined by a namespace "
            "condition to SageMaker's job namespaces.",
        ),
        *[
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", streams),
                reason="Log stream names are chosen by SageMaker per job at run time; the grant "
                "is confined to SageMaker's job log group.",
            )
            for streams in log_streams
        ],
    )
    return role


def grant_state_machine(
    machine: sfn.StateMachine, *, name_prefix: str, package_group: str, jobs_role: iam.IRole
) -> None:
    """Let ``machine`` run and follow its jobs and pass them ``jobs_role``; nothing more.

    Parameters
    ----------
    machine:
        The customization state machine (its SDK tasks add their own grants).
    name_prefix:
        Prefix of the run's job names, ``chatbot-<env>-cust``.
    package_group:
        The model package group the ``Register`` task writes to.
    jobs_role:
        The jobs' execution role.
    """
    patterns = {"processing-job": f"{name_prefix}-*", "training-job": f"{name_prefix}-*"}
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=list(JOB_ACTIONS),
            resources=[sagemaker_arn(kind, pattern) for kind, pattern in patterns.items()],
        )
    )
    # .sync integrations follow job state through these Step Functions-managed rules.
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
            resources=[
                pseudo.regional_arn(
                    "events", f"rule/StepFunctionsGetEventsForSageMaker{kind}JobsRule"
                )
                for kind in ("Processing", "Training")
            ],
        )
    )
    machine.add_to_role_policy(
        iam.PolicyStatement(
            actions=["iam:PassRole"],
            resources=[jobs_role.role_arn],
            conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
        )
    )
    patterns["model-package"] = f"{package_group}/*"
    Validations.of(machine).acknowledge(
        *[
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", sagemaker_arn(kind, pattern)),
                reason=f"SageMaker {kind}s are named per run at execution time; the wildcard "
                f"is confined to the '{pattern[:-1]}' prefix of this environment.",
            )
            for kind, pattern in patterns.items()
        ],
        Acknowledgment(
            id="AwsSolutions-IAM5[Resource::*]",
            reason="X-Ray tracing actions of the state machine have no resource-level permissions.",
        ),
    )
