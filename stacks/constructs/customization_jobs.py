"""The customization pipeline's SageMaker job states: validate data, train, evaluate."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from chatbot_contracts.training import (
    HP_CHECKPOINT_STEPS,
    METRIC_DEFINITIONS,
    SPOT_CHECKPOINT_STEPS,
)
from stacks.constructs import pseudo
from stacks.constructs.customization_asl import (
    RunLocations,
    cluster,
    processing_input,
    render,
    states_array,
    training_channel,
)

__all__ = ["JobNetwork", "JobSettings", "evaluate_state", "train_state", "validate_state"]

_PROCESSING = "/opt/ml/processing"
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


@dataclass(frozen=True, slots=True)
class JobNetwork:
    """Where the jobs run in an environment with a private network.

    Attributes
    ----------
    subnet_ids:
        The network's private subnets.
    security_group_id:
        The jobs' group: HTTPS out to the VPC endpoints and gateways only.
    """

    subnet_ids: tuple[str, ...]
    security_group_id: str

    def vpc_config(self) -> dict[str, Any]:
        """The ``VpcConfig`` of a training or processing job."""
        return {"SecurityGroupIds": [self.security_group_id], "Subnets": list(self.subnet_ids)}


@dataclass(frozen=True, slots=True)
class JobSettings:
    """What every job state of one pipeline shares.

    Attributes
    ----------
    run:
        Names and URIs of the run.
    role_arn:
        The jobs' execution role.
    image_uri:
        The jobs image (the ``customize`` package).
    base_uri:
        ``s3://`` prefix of the base model's weights.
    key_arn:
        KMS key of the assets bucket, for job outputs.
    network:
        The private network the jobs run in, network-isolated (their containers open no
        connection; SageMaker moves inputs, outputs and checkpoints through the VPC's S3
        gateway); ``None``: SageMaker's default networking.
    """

    run: RunLocations
    role_arn: str
    image_uri: str
    base_uri: str
    key_arn: str
    network: JobNetwork | None = None

    def training_network(self) -> dict[str, Any]:
        """A training job's network settings (none without a private network)."""
        if self.network is None:
            return {}
        return {"EnableNetworkIsolation": True, "VpcConfig": self.network.vpc_config()}

    def processing_network(self) -> dict[str, Any]:
        """A processing job's ``NetworkConfig`` (none without a private network)."""
        if self.network is None:
            return {}
        return {
            "NetworkConfig": {
                "EnableNetworkIsolation": True,
                "VpcConfig": self.network.vpc_config(),
            }
        }


def _sync_task(
    scope: Construct, state_id: str, job: str, parameters: dict[str, Any]
) -> sfn.CustomState:
    return sfn.CustomState(
        scope,
        state_id,
        state_json={
            "Type": "Task",
            "Resource": f"arn:{pseudo.partition()}:states:::sagemaker:create{job}Job.sync",
            "Parameters": render(parameters),
            "ResultPath": None,
        },
    )


def _processing_job(
    scope: Construct,
    state_id: str,
    jobs: JobSettings,
    *,
    job: str,
    command: list[str],
    arguments: str,
    inputs: list[dict[str, Any]],
    output: str,
    instance_type: str,
) -> sfn.CustomState:
    """A ``customize`` processing job of the run: ``inputs`` in, one ``output`` prefix out."""
    run = jobs.run
    return _sync_task(
        scope,
        state_id,
        "Processing",
        {
            "ProcessingJobName": run.name(job),
            "RoleArn": jobs.role_arn,
            "AppSpecification": {
                "ImageUri": jobs.image_uri,
                "ContainerEntrypoint": ["python3", "-m", "customize", *command],
                "ContainerArguments": arguments,
            },
            "ProcessingInputs": inputs,
            "ProcessingOutputConfig": {
                "KmsKeyId": jobs.key_arn,
                "Outputs": [
                    {
                        "OutputName": output,
                        "S3Output": {
                            "S3Uri": run.uri(output),
                            "LocalPath": f"{_PROCESSING}/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ],
            },
            "ProcessingResources": cluster(instance_type),
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
            "Environment": _OFFLINE_ENV,
            **jobs.processing_network(),
        },
    )


def validate_state(scope: Construct, jobs: JobSettings, *, instance_type: str) -> sfn.CustomState:
    """A processing job that validates the run's dataset and splits it (``customize prepare``).

    Parameters
    ----------
    scope:
        Where the state is defined.
    jobs:
        Shared job settings.
    instance_type:
        CPU instance of the job.

    Returns
    -------
    sfn.CustomState
        The ``ValidateData`` state, which waits for the job to finish.
    """
    return _processing_job(
        scope,
        "ValidateData",
        jobs,
        job="validate",
        command=["prepare", "split"],
        arguments=states_array(
            f"{_PROCESSING}/input/data/data.jsonl",
            "--mode",
            "$.mode",
            "--tokenizer",
            f"{_PROCESSING}/input/base",
            "--out-dir",
            f"{_PROCESSING}/output",
        ),
        inputs=[
            processing_input("data", jobs.run.dataset_uri(), f"{_PROCESSING}/input/data"),
            processing_input("base", jobs.base_uri, f"{_PROCESSING}/input/base"),
        ],
        output="prepared",
        instance_type=instance_type,
    )


def train_state(
    scope: Construct,
    jobs: JobSettings,
    *,
    instance_type: str,
    use_spot: bool,
    default_hyperparameters: Mapping[str, str],
    max_training_time: Duration,
) -> sfn.CustomState:
    """A training job (``customize.train``) that writes the merged model uncompressed.

    Parameters
    ----------
    scope:
        Where the state is defined.
    jobs:
        Shared job settings.
    instance_type:
        GPU instance of the job.
    use_spot:
        Managed spot training, with checkpoints under the run's prefix.
    default_hyperparameters:
        The environment's training settings; the execution input's ``hyperparameters``
        override them.
    max_training_time:
        Job time limit (a spot job may wait twice that).

    Returns
    -------
    sfn.CustomState
        The ``Train`` state, which waits for the job to finish.
    """
    run = jobs.run
    stopping: dict[str, Any] = {"MaxRuntimeInSeconds": int(max_training_time.to_seconds())}
    spot: dict[str, Any] = {}
    if use_spot:
        stopping["MaxWaitTimeInSeconds"] = 2 * int(max_training_time.to_seconds())
        spot = {
            "EnableManagedSpotTraining": True,
            "CheckpointConfig": {
                "S3Uri": run.uri("checkpoints"),
                "LocalPath": "/opt/ml/checkpoints",
            },
        }
    # Spot jobs checkpoint every 50 steps, and every run gets the environment's training
    # settings, unless the execution input says otherwise (braces in intrinsic string
    # literals are escaped, as the ASL requires).
    defaults = {HP_CHECKPOINT_STEPS: str(SPOT_CHECKPOINT_STEPS)} if use_spot else {}
    defaults.update(default_hyperparameters)
    escaped = json.dumps(defaults).replace("{", "\\{").replace("}", "\\}")
    hyperparameters = (
        f"States.JsonMerge(States.StringToJson('{escaped}'), $.hyperparameters, false)"
        if defaults
        else "$.hyperparameters"
    )
    return _sync_task(
        scope,
        "Train",
        "Training",
        {
            "TrainingJobName": run.name("train"),
            "RoleArn": jobs.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": jobs.image_uri,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["python3", "-m", "customize.train"],
                "MetricDefinitions": [dict(item) for item in METRIC_DEFINITIONS],
            },
            "HyperParameters": hyperparameters,
            "InputDataConfig": [
                training_channel("train", run.uri("prepared", "train")),
                training_channel("validation", run.uri("prepared", "validation")),
                training_channel("model", jobs.base_uri),
            ],
            # Uncompressed output: the model folder is an S3 prefix that a promoted chat
            # endpoint receives through SageMaker's own S3Prefix download, no tarball between.
            "OutputDataConfig": {
                "S3OutputPath": run.uri("training"),
                "KmsKeyId": jobs.key_arn,
                "CompressionType": "NONE",
            },
            "ResourceConfig": {
                "InstanceType": instance_type,
                "InstanceCount": 1,
                "VolumeSizeInGB": 200,
            },
            "StoppingCondition": stopping,
            "Environment": _OFFLINE_ENV,
            **spot,
            **jobs.training_network(),
        },
    )


def evaluate_state(
    scope: Construct,
    jobs: JobSettings,
    *,
    instance_type: str,
    tensor_parallel_degree: int,
    max_model_len: int,
) -> sfn.CustomState:
    """A processing job that compares the customized model with the base (``customize evaluate``).

    ``--require-improvement``: a model that does not beat the base fails the job, and the run
    stops before registration.

    Parameters
    ----------
    scope:
        Where the state is defined.
    jobs:
        Shared job settings.
    instance_type:
        GPU instance of the job.
    tensor_parallel_degree, max_model_len:
        The chat endpoint's vLLM settings, with which the job generates.

    Returns
    -------
    sfn.CustomState
        The ``Evaluate`` state, which waits for the job to finish.
    """
    run = jobs.run
    return _processing_job(
        scope,
        "Evaluate",
        jobs,
        job="evaluate",
        command=["evaluate"],
        arguments=states_array(
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
            str(tensor_parallel_degree),
            "--max-model-len",
            str(max_model_len),
            "--require-improvement",
        ),
        inputs=[
            processing_input(
                "data", run.uri("prepared", "validation"), f"{_PROCESSING}/input/data"
            ),
            processing_input("base", jobs.base_uri, f"{_PROCESSING}/input/base"),
            processing_input("model", run.model_uri(raw=True), f"{_PROCESSING}/input/model"),
        ],
        output="evaluation",
        instance_type=instance_type,
    )
