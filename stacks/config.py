"""Per-environment settings from cdk.json context, as frozen pydantic models validated at synth."""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from chatbot_contracts.moderation import ModerationLabel
from stacks.customization_fit import (
    LORA_MODULE_SHAPES,
    evaluation_memory_per_gpu,
    training_memory_per_gpu,
)
from stacks.instance_catalog import GpuInstanceType, UnknownInstanceTypeError

__all__ = [
    "ENVIRONMENTS_CONTEXT_KEY",
    "BaseImageConfig",
    "ConfigError",
    "CustomizationConfig",
    "CustomizationTraining",
    "EndpointSettings",
    "EnvironmentConfig",
    "FrontDoorConfig",
    "ModelSettings",
    "ModelShape",
    "ScalingSettings",
    "load_environment",
]

ENVIRONMENTS_CONTEXT_KEY = "chatbot:environments"


BYTES_PER_PARAMETER = {"float16": 2, "bfloat16": 2, "float32": 4}
# Weights may take at most this share of the GPU memory they are sharded over; the rest is
# KV cache and activations.
MAX_WEIGHT_SHARE_OF_GPU_MEMORY = 0.9

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827)

TimeoutSeconds = Annotated[int, Field(ge=60, le=3600)]


@cache
def _sagemaker_service_shapes() -> dict[str, Any]:
    # The pinned botocore's service model is the list SageMaker's API validates against. Read
    # as data: importing botocore.session (and its docs and client machinery) costs synth ~0.5 s.
    spec = importlib.util.find_spec("botocore")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("botocore is not installed: it carries SageMaker's instance-type lists")
    data = Path(next(iter(spec.submodule_search_locations))) / "data" / "sagemaker"
    newest = max(path for path in data.iterdir() if path.is_dir())
    plain, packed = newest / "service-2.json", newest / "service-2.json.gz"
    raw = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
    shapes: dict[str, Any] = json.loads(raw)["shapes"]
    return shapes


def _sagemaker_instance_types(shape: str) -> frozenset[str]:
    return frozenset(_sagemaker_service_shapes()[shape]["enum"])


class ConfigError(ValueError):
    """An environment's settings are missing or invalid; the message names environment and field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BaseImageConfig(_Frozen):
    """Base image of the inference container, passed to its Dockerfile as ``BASE_IMAGE``.

    Either ``uri`` pins an image, or ``framework``/``version`` name an AWS Deep Learning
    Container that the ``sagemaker`` SDK's image-URI catalog resolves for the region.
    """

    framework: Literal["vllm", "djl-lmi"] | None = None
    version: str | None = None
    uri: str | None = None
    # Region used to look the DLC up for an environment-agnostic (no region) environment.
    lookup_region: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> BaseImageConfig:
        if (self.uri is None) == (self.framework is None or self.version is None):
            raise ValueError("set either uri, or framework and version (not both)")
        return self


class ModelSettings(_Frozen):
    """Which weights an endpoint serves and the engine settings for them."""

    hf_repo_id: Annotated[str, Field(pattern=r"^[\w.-]+/[\w.-]+$")]
    weights_name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
    parameters_billion: Annotated[float, Field(gt=0)]
    dtype: Literal["float16", "bfloat16", "float32"]
    max_model_len: Annotated[int, Field(ge=256, le=1_048_576)]
    gpu_memory_utilization: Annotated[float, Field(gt=0.1, le=0.98)]
    enable_prefix_caching: bool
    max_new_tokens_cap: Annotated[int, Field(ge=1)]

    @property
    def weights_gb(self) -> float:
        """Size of the weights in GB at ``dtype``."""
        return self.parameters_billion * BYTES_PER_PARAMETER[self.dtype]


class ScalingSettings(_Frozen):
    """Target-tracking autoscaling on concurrent requests per model copy."""

    min_instances: Annotated[int, Field(ge=1)]
    max_instances: Annotated[int, Field(ge=1)]
    target_concurrent_requests: Annotated[float, Field(gt=0)]
    scale_in_cooldown_s: Annotated[int, Field(ge=0, le=3600)]
    scale_out_cooldown_s: Annotated[int, Field(ge=0, le=3600)]


class EndpointSettings(_Frozen):
    """One SageMaker endpoint: model, instance, timeouts, scaling and alarm thresholds."""

    model: ModelSettings
    instance_type: str
    tensor_parallel_degree: Annotated[int, Field(ge=1)]
    initial_instance_count: Annotated[int, Field(ge=1)]
    container_startup_health_check_timeout_s: TimeoutSeconds
    model_data_download_timeout_s: TimeoutSeconds
    volume_size_gb: Annotated[int, Field(ge=1, le=512)] | None = None
    scaling: ScalingSettings | None = None
    latency_alarm_p90_ms: Annotated[int, Field(ge=1)]
    error_alarm_5xx_per_5min: Annotated[int, Field(ge=1)]

    @property
    def instance(self) -> GpuInstanceType:
        """The validated instance type."""
        return GpuInstanceType.parse(self.instance_type)

    @model_validator(mode="after")
    def _fits_instance(self) -> EndpointSettings:
        try:
            instance = GpuInstanceType.parse(self.instance_type)
        except UnknownInstanceTypeError as error:
            raise ValueError(f"instance_type: {error}") from None
        tp = self.tensor_parallel_degree
        if tp > instance.gpu_count or instance.gpu_count % tp:
            raise ValueError(
                f"tensor_parallel_degree: {tp} must divide and not exceed the "
                f"{instance.gpu_count} GPU(s) of {instance.name}"
            )
        if self.volume_size_gb is not None and instance.nvme_backed:
            raise ValueError(
                f"volume_size_gb: {instance.name} is NVMe-backed ({instance.family}); "
                "SageMaker rejects VolumeSizeInGB there, remove it"
            )
        budget_gb = MAX_WEIGHT_SHARE_OF_GPU_MEMORY * tp * instance.gpu_memory_gb
        if self.model.weights_gb > budget_gb:
            raise ValueError(
                f"model.parameters_billion: {self.model.parameters_billion}B parameters in "
                f"{self.model.dtype} need {self.model.weights_gb:.1f} GB, more than "
                f"{MAX_WEIGHT_SHARE_OF_GPU_MEMORY:.0%} of the {tp * instance.gpu_memory_gb} GB "
                f"of GPU memory on {tp} GPU(s) of {instance.name} ({budget_gb:.1f} GB)"
            )
        if self.scaling is not None:
            low, high = self.scaling.min_instances, self.scaling.max_instances
            if not low <= self.initial_instance_count <= high:
                raise ValueError(
                    f"initial_instance_count: need scaling.min_instances ({low}) <= "
                    f"initial_instance_count ({self.initial_instance_count}) <= "
                    f"scaling.max_instances ({high})"
                )
        return self


class FrontDoorConfig(_Frozen):
    """The Lambda front door and its REST API."""

    auth: Literal["iam", "cognito"]
    reserved_concurrency: Annotated[int, Field(ge=1, le=1000)]
    memory_mb: Annotated[int, Field(ge=128, le=10240)]
    throttle_rate_limit: Annotated[float, Field(gt=0)]
    throttle_burst_limit: Annotated[int, Field(ge=1)]
    session_ttl_days: Annotated[int, Field(ge=1, le=3650)]
    blocked_labels: tuple[ModerationLabel, ...]
    refusal_text: Annotated[str, Field(min_length=1)]
    output_moderation_mode: Literal["async", "sync"]
    log_retention_days: int

    @model_validator(mode="after")
    def _retention_allowed(self) -> FrontDoorConfig:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"log_retention_days: {self.log_retention_days} is not a CloudWatch Logs "
                f"retention period ({', '.join(map(str, LOG_RETENTION_DAYS))})"
            )
        return self


class ModelShape(_Frozen):
    """The chat model's architecture, as its ``config.json`` gives it (for the memory rule)."""

    hidden_size: Annotated[int, Field(ge=1)]
    num_layers: Annotated[int, Field(ge=1)]
    vocab_size: Annotated[int, Field(ge=1)]


class CustomizationTraining(_Frozen):
    """Training settings the pipeline passes to every run (an execution may override them).

    ``batch_size`` is per GPU; FSDP shards the model over all GPUs of the training instance
    unless ``quantization`` is ``4bit`` (QLoRA, one GPU, adapter output only).
    """

    method: Literal["lora", "full"]
    quantization: Literal["none", "4bit"]
    bf16: bool
    gradient_checkpointing: bool
    batch_size: Annotated[int, Field(ge=1, le=256)]
    max_seq_len: Annotated[int, Field(ge=16, le=32768)]
    lora_rank: Annotated[int, Field(ge=1, le=256)]
    lora_target_modules: tuple[str, ...]

    @model_validator(mode="after")
    def _consistent(self) -> CustomizationTraining:
        if self.quantization == "4bit" and self.method != "lora":
            raise ValueError("quantization: 4bit trains LoRA adapters only; set method to lora")
        if self.method == "lora":
            unknown = [m for m in self.lora_target_modules if m not in LORA_MODULE_SHAPES]
            if unknown or not self.lora_target_modules:
                raise ValueError(
                    f"lora_target_modules: unknown or none ({', '.join(unknown)}); "
                    f"known: {', '.join(LORA_MODULE_SHAPES)}"
                )
        return self

    def hyperparameters(self) -> dict[str, str]:
        """The training job's hyperparameters (``customize.train`` names, string values)."""
        values = {
            "method": self.method,
            "quantization": self.quantization,
            "bf16": self.bf16,
            "gradient_checkpointing": self.gradient_checkpointing,
            "batch_size": self.batch_size,
            "max_seq_len": self.max_seq_len,
            "lora_rank": self.lora_rank,
            "lora_alpha": 2 * self.lora_rank,
            "lora_target_modules": ",".join(self.lora_target_modules),
        }
        if self.quantization == "4bit":
            values["save_format"] = "adapter"
        return {
            key: (str(value).lower() if isinstance(value, bool) else str(value))
            for key, value in values.items()
        }


class CustomizationConfig(_Frozen):
    """The customization pipeline: GPU instances of its jobs, spot, the training settings."""

    training_instance_type: str
    evaluation_instance_type: str
    # Managed spot training with checkpoints (the evaluation job always runs on demand).
    use_spot: bool
    model_shape: ModelShape
    training: CustomizationTraining

    @property
    def training_instance(self) -> GpuInstanceType:
        """The validated training instance type."""
        return GpuInstanceType.parse(self.training_instance_type)

    @property
    def evaluation_instance(self) -> GpuInstanceType:
        """The validated evaluation instance type."""
        return GpuInstanceType.parse(self.evaluation_instance_type)

    @model_validator(mode="after")
    def _sagemaker_accepts_instances(self) -> CustomizationConfig:
        # The evaluation job is a processing job: SageMaker accepts fewer types there.
        for field, value, shape, job in (
            (
                "training_instance_type",
                self.training_instance_type,
                "TrainingInstanceType",
                "training",
            ),
            (
                "evaluation_instance_type",
                self.evaluation_instance_type,
                "ProcessingInstanceType",
                "processing",
            ),
        ):
            try:
                GpuInstanceType.parse(value)
            except UnknownInstanceTypeError as error:
                raise ValueError(f"{field}: {error}") from None
            if value not in _sagemaker_instance_types(shape):
                raise ValueError(f"{field}: SageMaker does not run {job} jobs on {value!r}")
        return self


class EnvironmentConfig(_Frozen):
    """Everything one environment (one CDK Stage) needs."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,9}$")]
    account: Annotated[str, Field(pattern=r"^\d{12}$")] | None = None
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")] | None = None
    # RETAIN + deletion protection on stateful resources, termination protection on stacks.
    protect_data: bool
    base_image: BaseImageConfig
    chat: EndpointSettings
    moderation: EndpointSettings
    front_door: FrontDoorConfig
    # Absent: the environment has no customization stack.
    customization: CustomizationConfig | None = None

    @model_validator(mode="after")
    def _account_and_region_together(self) -> EnvironmentConfig:
        if (self.account is None) != (self.region is None):
            raise ValueError("account/region: set both (a deployable environment) or neither")
        return self

    @model_validator(mode="after")
    def _chat_model_fits_customization_jobs(self) -> EnvironmentConfig:
        # The pipeline customizes the chat model: training as customize.train runs it (FSDP
        # over the instance's GPUs, or QLoRA on one), evaluation with vLLM as the chat
        # endpoint runs it (its tensor-parallel degree and context length).
        if self.customization is None:
            return self
        model, shape = self.chat.model, self.customization.model_shape
        training, instance = self.customization.training, self.customization.training_instance
        need = training_memory_per_gpu(
            parameters_billion=model.parameters_billion,
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            vocab_size=shape.vocab_size,
            method=training.method,
            quantization=training.quantization,
            bf16=training.bf16,
            gradient_checkpointing=training.gradient_checkpointing,
            batch_size=training.batch_size,
            max_seq_len=training.max_seq_len,
            lora_rank=training.lora_rank,
            lora_targets=list(training.lora_target_modules),
            gpus=instance.gpu_count,
        )
        budget_gb = MAX_WEIGHT_SHARE_OF_GPU_MEMORY * instance.gpu_memory_gb
        if need.total_gb > budget_gb:
            gpus = 1 if training.quantization == "4bit" else instance.gpu_count
            raise ValueError(
                f"customization.training_instance_type: training the chat model's "
                f"{model.parameters_billion}B parameters ({training.method}, quantization "
                f"{training.quantization}, batch {training.batch_size} x {training.max_seq_len}"
                f" per GPU, sharded over {gpus} GPU(s)) needs {need.describe()}, more than "
                f"{MAX_WEIGHT_SHARE_OF_GPU_MEMORY:.0%} of one {instance.gpu_memory_gb} GB GPU "
                f"of {instance.name} ({budget_gb:.1f} GB)"
            )
        evaluation = self.customization.evaluation_instance
        tp = self.chat.tensor_parallel_degree
        if tp > evaluation.gpu_count or evaluation.gpu_count % tp:
            raise ValueError(
                f"customization.evaluation_instance_type: the evaluation generates with vLLM "
                f"at the chat endpoint's tensor_parallel_degree {tp}, which must divide and not "
                f"exceed the {evaluation.gpu_count} GPU(s) of {evaluation.name}"
            )
        need = evaluation_memory_per_gpu(
            parameters_billion=model.parameters_billion,
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            vocab_size=shape.vocab_size,
            dtype_bytes=BYTES_PER_PARAMETER[model.dtype],
            tensor_parallel_degree=tp,
            max_model_len=model.max_model_len,
        )
        budget_gb = model.gpu_memory_utilization * evaluation.gpu_memory_gb
        if need.total_gb > budget_gb:
            raise ValueError(
                f"customization.evaluation_instance_type: vLLM serving the chat model's "
                f"{model.parameters_billion}B parameters in {model.dtype} at tensor parallel "
                f"{tp} ({model.max_model_len} tokens) needs {need.describe()}, more than "
                f"{model.gpu_memory_utilization:.0%} of one {evaluation.gpu_memory_gb} GB GPU "
                f"of {evaluation.name} ({budget_gb:.1f} GB)"
            )
        return self

    @property
    def endpoint_names(self) -> dict[str, str]:
        """Endpoint name per role, as the interface contract fixes them."""
        return {role: f"chatbot-{self.name}-{role}" for role in ("chat", "moderation")}


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(root)"


def load_environment(context: Mapping[str, Any], name: str) -> EnvironmentConfig:
    """Load and validate environment ``name`` from the app's context.

    Parameters
    ----------
    context:
        Context values; ``context["chatbot:environments"]`` maps environment names to settings.
    name:
        The environment to load, as given with ``-c env=<name>``.

    Returns
    -------
    EnvironmentConfig
        The frozen, validated settings.

    Raises
    ------
    ConfigError
        If the environment is unknown (the message lists the known ones) or a field is invalid
        (the message names the environment and the field).
    """
    environments = context.get(ENVIRONMENTS_CONTEXT_KEY)
    if not isinstance(environments, Mapping) or not environments:
        raise ConfigError(f"context {ENVIRONMENTS_CONTEXT_KEY!r} is missing or empty (cdk.json)")
    if name not in environments:
        known = ", ".join(sorted(environments))
        raise ConfigError(f"unknown environment {name!r}; known environments: {known}")
    raw = environments[name]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"environment {name!r}: settings must be an object")
    try:
        return EnvironmentConfig.model_validate({**raw, "name": name})
    except ValidationError as error:
        lines = []
        for detail in error.errors(include_url=False):
            message = re.sub(r"^(Value|Assertion) error, ", "", detail["msg"])
            lines.append(f"environment {name!r}: {_field_path(detail['loc'])}: {message}")
        raise ConfigError("\n".join(lines)) from None
