"""Per-environment settings from cdk.json context, as frozen pydantic models validated at synth."""

from __future__ import annotations

import gzip
import importlib.util
import ipaddress
import json
import math
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
    "ComponentSettings",
    "ConfigError",
    "CustomizationConfig",
    "CustomizationTraining",
    "EndpointSettings",
    "EnvironmentConfig",
    "FrontDoorConfig",
    "HostingConfig",
    "ModelSettings",
    "ModelShape",
    "NetworkConfig",
    "NotificationsConfig",
    "OffHoursSchedule",
    "OperationsConfig",
    "RolloutConfig",
    "ScaleToZeroSettings",
    "ScalingSettings",
    "ThresholdsConfig",
    "WafConfig",
    "load_environment",
]

ENVIRONMENTS_CONTEXT_KEY = "chatbot:environments"


BYTES_PER_PARAMETER = {"float16": 2, "bfloat16": 2, "float32": 4}
# Weights may take at most this share of the GPU memory they are sharded over; the rest is
# KV cache and activations.
MAX_WEIGHT_SHARE_OF_GPU_MEMORY = 0.9

# Share of a copy's slice of host memory it reserves; SageMaker's agents keep the rest.
HOST_MEMORY_SHARE_FOR_COPIES = 0.9
# Copies an inference component's rolling update (and its rollback) replaces per step: SageMaker
# starts the new copy before it stops an old one, so the fleet needs room for one more.
ROLLING_BATCH_COPIES = 1

# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827)

TimeoutSeconds = Annotated[int, Field(ge=60, le=3600)]

# The front door refuses requests whose messages exceed this many characters
# (lambda/front_door/settings.py, max_request_chars; a test keeps the two equal). The WAF's
# body-size rule must let every such request through, JSON envelope included.
FRONT_DOOR_MAX_REQUEST_CHARS = 32_000
FRONT_DOOR_REQUEST_ENVELOPE_BYTES = 4096

# Promotion: the chat endpoint may serve a customization run's merged weights instead of a
# staged model; both live in the environment's assets bucket.
_WEIGHTS_PREFIX = r"^(models|customization/runs)(/[A-Za-z0-9][A-Za-z0-9._=-]*)+/$"
_MODEL_PACKAGE_ARN = (
    r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"model-package/(?P<group>[A-Za-z0-9-]{1,63})/\d+$"
)
# Endpoint alarms, by the name cdk.json uses for them in ``operations.rollout.rollback_alarms``.
EndpointAlarmKind = Literal[
    "invocation_5xx", "model_latency_p90", "gpu_memory", "gpu_utilization", "instances_at_max"
]
# Capacity, not health: a new fleet that scales out is no reason to roll it back.
NOT_ROLLBACK_ALARMS = frozenset({"instances_at_max"})
# SageMaker's blue/green limits (BlueGreenUpdatePolicy, TrafficRoutingConfig).
MAX_EXECUTION_TIMEOUT_RANGE = (600, 28_800)
ENDPOINT_ALARM_PERIOD_S = 300


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
    # Set by `make promote` (docs/customize.md): the key prefix in the assets bucket whose
    # weights the endpoint serves instead of models/<weights_name>/, and, for lineage, the
    # approved model package those weights were registered as.
    weights_prefix: Annotated[str, Field(pattern=_WEIGHTS_PREFIX)] | None = None
    model_package_arn: Annotated[str, Field(pattern=_MODEL_PACKAGE_ARN)] | None = None

    @model_validator(mode="after")
    def _package_names_its_weights(self) -> ModelSettings:
        if self.model_package_arn is not None and self.weights_prefix is None:
            raise ValueError(
                "weights_prefix: required with model_package_arn (the package's weights); "
                "run make promote rather than editing one of them by hand"
            )
        return self

    @property
    def serving_prefix(self) -> str:
        """Key prefix of the weights the endpoint serves: ``weights_prefix`` or the staged model."""
        return self.weights_prefix or f"models/{self.weights_name}/"

    @property
    def weights_gb(self) -> float:
        """Size of the weights in GB at ``dtype``."""
        return self.parameters_billion * BYTES_PER_PARAMETER[self.dtype]


class ScalingSettings(_Frozen):
    """Target-tracking autoscaling of a plain endpoint's instances on concurrent requests."""

    # 0 is refused by the environment's validator: only inference components scale to zero.
    min_instances: Annotated[int, Field(ge=0)]
    max_instances: Annotated[int, Field(ge=1)]
    target_concurrent_requests: Annotated[float, Field(gt=0)]
    scale_in_cooldown_s: Annotated[int, Field(ge=0, le=3600)]
    scale_out_cooldown_s: Annotated[int, Field(ge=0, le=3600)]


class ComponentSettings(_Frozen):
    """An inference component's copies: how many, their autoscaling and their accelerators."""

    # SageMaker refuses to create a component with CopyCount 0; it reaches 0 by scaling in.
    initial_copies: Annotated[int, Field(ge=1)]
    min_copies: Annotated[int, Field(ge=0)]
    max_copies: Annotated[int, Field(ge=1)]
    target_concurrent_requests_per_copy: Annotated[float, Field(gt=0)]
    scale_in_cooldown_s: Annotated[int, Field(ge=0, le=3600)]
    scale_out_cooldown_s: Annotated[int, Field(ge=0, le=3600)]
    # GPUs per copy; absent: the role's tensor_parallel_degree.
    accelerators_per_copy: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> ComponentSettings:
        if not self.min_copies <= self.initial_copies <= self.max_copies:
            raise ValueError(
                f"initial_copies: need min_copies ({self.min_copies}) <= initial_copies "
                f"({self.initial_copies}) <= max_copies ({self.max_copies})"
            )
        return self


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
    # Only with hosting.mode "inference_components" (and then required).
    component: ComponentSettings | None = None
    latency_alarm_p90_ms: Annotated[int, Field(ge=1)]
    error_alarm_5xx_per_5min: Annotated[int, Field(ge=1)]

    @property
    def instance(self) -> GpuInstanceType:
        """The validated instance type."""
        return GpuInstanceType.parse(self.instance_type)

    @property
    def accelerators_per_copy(self) -> int:
        """GPUs one inference-component copy reserves (default: the tensor-parallel degree)."""
        if self.component is not None and self.component.accelerators_per_copy is not None:
            return self.component.accelerators_per_copy
        return self.tensor_parallel_degree

    @property
    def copies_per_instance(self) -> int:
        """How many inference-component copies one instance holds (its GPUs decide)."""
        return self.instance.gpu_count // self.accelerators_per_copy

    @property
    def memory_per_copy_mb(self) -> int:
        """Host memory one copy reserves: its GPUs' share of the instance's memory, less 10 %.

        SageMaker keeps part of each instance's memory for its own agents, so a copy that asks
        for the whole share could never be placed.
        """
        instance = self.instance
        share = instance.memory_gib * 1024 * self.accelerators_per_copy / instance.gpu_count
        return int(share * HOST_MEMORY_SHARE_FOR_COPIES)

    def instances_for(self, copies: int) -> int:
        """Instances needed to place ``copies`` copies (0 for 0)."""
        return math.ceil(copies / self.copies_per_instance)

    @property
    def max_instances(self) -> int:
        """Most instances this endpoint can run at once, during a roll-out included.

        Plain endpoints: blue/green updates start a green fleet as large as the blue one before
        the blue one stops, so twice the fleet at its scaling maximum. Inference components:
        the endpoint's ``ManagedInstanceScaling`` maximum, which leaves room for
        ``max_copies`` plus the :data:`ROLLING_BATCH_COPIES` a rolling update or its rollback
        runs beside them.
        """
        if self.component is not None:
            copies = self.component.max_copies + ROLLING_BATCH_COPIES
            return max(self.instances_for(copies), self.initial_instance_count)
        fleet = self.scaling.max_instances if self.scaling else self.initial_instance_count
        return 2 * fleet

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
        self._copies_fit(instance)
        if self.scaling is not None:
            low, high = self.scaling.min_instances, self.scaling.max_instances
            if not low <= self.initial_instance_count <= high:
                raise ValueError(
                    f"initial_instance_count: need scaling.min_instances ({low}) <= "
                    f"initial_instance_count ({self.initial_instance_count}) <= "
                    f"scaling.max_instances ({high})"
                )
        return self

    def _copies_fit(self, instance: GpuInstanceType) -> None:
        component = self.component
        if component is None:
            return
        accelerators = self.accelerators_per_copy
        if self.tensor_parallel_degree > accelerators:
            raise ValueError(
                f"component.accelerators_per_copy: tensor_parallel_degree "
                f"{self.tensor_parallel_degree} needs at least that many GPUs per copy, "
                f"not {accelerators}"
            )
        if accelerators > instance.gpu_count:
            raise ValueError(
                f"component.accelerators_per_copy: {accelerators} GPUs per copy, but "
                f"{instance.name} has {instance.gpu_count}"
            )
        placed = component.initial_copies * accelerators
        available = self.initial_instance_count * instance.gpu_count
        if placed > available:
            raise ValueError(
                f"component.initial_copies: {component.initial_copies} copies x {accelerators} "
                f"GPU(s) = {placed} GPUs, more than the {available} GPU(s) of "
                f"initial_instance_count ({self.initial_instance_count}) x {instance.name}"
            )


class OffHoursSchedule(_Frozen):
    """When a component may sleep: scheduled actions lower the copy minimum to 0 and back.

    Expressions are Application Auto Scaling ``cron(...)`` schedules in ``timezone``.
    """

    sleep_cron: Annotated[str, Field(pattern=r"^cron\(.+\)$")]
    wake_cron: Annotated[str, Field(pattern=r"^cron\(.+\)$")]
    timezone: Annotated[str, Field(pattern=r"^[A-Za-z_]+(/[A-Za-z_+-]+)*$")]


class ScaleToZeroSettings(_Frozen):
    """Scale-to-zero of inference components: idle time, and optionally only off hours."""

    # No invocation for this long scales a component in to its minimum (0 where allowed).
    idle_minutes: Annotated[int, Field(ge=5, le=1440)]
    # Absent: zero whenever idle (min_copies 0). Present: min_copies by day, 0 off hours.
    off_hours: OffHoursSchedule | None = None


class HostingConfig(_Frozen):
    """How the models are hosted: plain single-model endpoints or inference components.

    With components there is one endpoint per role (``chatbot-<env>-<role>``), each with one
    inference component: chat and moderation run on different GPU instance types in staging
    and prod, a copy reserves whole GPUs (two models cannot share dev's single A10G), and each
    role scales, sleeps and wakes on its own.
    """

    mode: Literal["endpoints", "inference_components"]
    # Retry-After (s) the front door sends while a model wakes from zero; SageMaker takes
    # minutes to place a copy on a fresh instance.
    wake_retry_after_s: Annotated[int, Field(ge=1, le=3600)] = 300
    scale_to_zero: ScaleToZeroSettings | None = None

    @property
    def uses_components(self) -> bool:
        """Whether the models are hosted as inference components."""
        return self.mode == "inference_components"


class WafConfig(_Frozen):
    """The WAF web ACL on the API stage: AWS common rules, a body-size rule, a per-IP rate rule."""

    # Requests per client IP in any 5-minute window before WAF blocks that IP.
    rate_limit_per_5min: Annotated[int, Field(ge=100, le=2_000_000_000)]
    # Bodies larger than this are blocked; it is also how much of a body WAF inspects
    # (API Gateway lets WAF inspect 16, 32, 48 or 64 KB).
    max_body_kb: Literal[16, 32, 48, 64] = 64

    @model_validator(mode="after")
    def _admits_the_front_doors_largest_request(self) -> WafConfig:
        need = FRONT_DOOR_MAX_REQUEST_CHARS + FRONT_DOOR_REQUEST_ENVELOPE_BYTES
        if self.max_body_kb * 1024 < need:
            raise ValueError(
                f"max_body_kb: {self.max_body_kb} KB would block requests the front door "
                f"accepts ({FRONT_DOOR_MAX_REQUEST_CHARS} characters of messages plus "
                f"{FRONT_DOOR_REQUEST_ENVELOPE_BYTES} bytes of JSON: {need} bytes)"
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
    # Absent: no web ACL (the stage's throttling and authorization remain).
    waf: WafConfig | None = None

    @model_validator(mode="after")
    def _retention_allowed(self) -> FrontDoorConfig:
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"log_retention_days: {self.log_retention_days} is not a CloudWatch Logs "
                f"retention period ({', '.join(map(str, LOG_RETENTION_DAYS))})"
            )
        return self


class NetworkConfig(_Frozen):
    """Private networking: a VPC (created, or imported by id) for endpoints and front door.

    Endpoints run network-isolated in its private subnets, the front-door Lambda runs there
    too, and AWS services are reached through VPC endpoints only (no NAT, no internet route).
    """

    # Import an existing VPC: its id, private subnet ids and their zones (same order).
    vpc_id: Annotated[str, Field(pattern=r"^vpc-[0-9a-f]{8,17}$")] | None = None
    private_subnet_ids: tuple[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")], ...] = ()
    # Route tables of the imported private subnets, for the S3 and DynamoDB gateway endpoints.
    private_route_table_ids: tuple[Annotated[str, Field(pattern=r"^rtb-[0-9a-f]{8,17}$")], ...] = ()
    # Zones of the created VPC's subnets, or of the imported subnets; named so that synth
    # needs no availability-zone lookup.
    availability_zones: tuple[Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")], ...]
    # Address range of a created VPC.
    cidr: str = "10.64.0.0/16"
    # Create the interface and gateway endpoints (an imported VPC may already have them).
    create_vpc_endpoints: bool = True
    flow_log_retention_days: int

    @model_validator(mode="after")
    def _consistent(self) -> NetworkConfig:
        if len(self.availability_zones) < 2 or len(set(self.availability_zones)) != len(
            self.availability_zones
        ):
            raise ValueError("availability_zones: name at least two distinct zones")
        if self.vpc_id is None and (self.private_subnet_ids or self.private_route_table_ids):
            raise ValueError(
                "private_subnet_ids: only with vpc_id (an imported VPC), as are "
                "private_route_table_ids"
            )
        if self.vpc_id is not None and len(self.private_subnet_ids) != len(self.availability_zones):
            raise ValueError(
                "private_subnet_ids: an imported VPC needs one private subnet id per "
                "availability zone, in the same order"
            )
        if (
            self.vpc_id is not None
            and self.create_vpc_endpoints
            and len(self.private_route_table_ids) != len(self.private_subnet_ids)
        ):
            raise ValueError(
                "private_route_table_ids: the S3 and DynamoDB gateway endpoints of an imported "
                "VPC need each private subnet's route table, in the same order"
            )
        try:
            network = ipaddress.ip_network(self.cidr)
        except ValueError as error:
            raise ValueError(f"cidr: {error}") from None
        if network.version != 4 or not 16 <= network.prefixlen <= 24:
            raise ValueError(f"cidr: {self.cidr} must be an IPv4 range from /16 to /24")
        if self.flow_log_retention_days not in LOG_RETENTION_DAYS:
            raise ValueError(
                f"flow_log_retention_days: {self.flow_log_retention_days} is not a CloudWatch "
                f"Logs retention period ({', '.join(map(str, LOG_RETENTION_DAYS))})"
            )
        return self


class RolloutConfig(_Frozen):
    """How CloudFormation rolls a changed endpoint out: SageMaker blue/green with auto-rollback.

    ``wait_interval_s`` is the baking period after each traffic step (the one step of
    ``ALL_AT_ONCE``), during which the ``rollback_alarms`` of that endpoint roll it back;
    ``termination_wait_s`` keeps the old fleet after the last step;
    ``max_execution_timeout_s`` bounds the whole deployment.
    """

    traffic_shifting: Literal["ALL_AT_ONCE", "CANARY", "LINEAR"]
    canary_size_percent: Annotated[int, Field(ge=1, le=50)] | None = None
    linear_step_percent: Annotated[int, Field(ge=10, le=50)] | None = None
    wait_interval_s: Annotated[int, Field(ge=0, le=3600)]
    termination_wait_s: Annotated[int, Field(ge=0, le=3600)]
    max_execution_timeout_s: Annotated[
        int, Field(ge=MAX_EXECUTION_TIMEOUT_RANGE[0], le=MAX_EXECUTION_TIMEOUT_RANGE[1])
    ]
    rollback_alarms: Annotated[tuple[EndpointAlarmKind, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _step_size_matches_mode(self) -> RolloutConfig:
        mode = self.traffic_shifting
        for field, owner in (("canary_size_percent", "CANARY"), ("linear_step_percent", "LINEAR")):
            if mode == owner and getattr(self, field) is None:
                raise ValueError(f"{field}: required when traffic_shifting is {mode}")
            if mode != owner and getattr(self, field) is not None:
                raise ValueError(
                    f"{field}: only meaningful with traffic_shifting {owner!r}, not {mode!r}"
                )
        return self

    @model_validator(mode="after")
    def _rollback_alarms_judge_health(self) -> RolloutConfig:
        if len(set(self.rollback_alarms)) != len(self.rollback_alarms):
            raise ValueError("rollback_alarms: each alarm at most once")
        capacity = sorted(NOT_ROLLBACK_ALARMS.intersection(self.rollback_alarms))
        if capacity:
            raise ValueError(
                f"rollback_alarms: {', '.join(capacity)} measures capacity, not the new fleet's "
                "health; it cannot roll a deployment back"
            )
        return self

    @property
    def baking_periods(self) -> int:
        """How many baking periods a deployment waits through, at most (conservative)."""
        if self.traffic_shifting == "LINEAR":
            assert self.linear_step_percent is not None
            return -(-100 // self.linear_step_percent)
        return 2 if self.traffic_shifting == "CANARY" else 1


class NotificationsConfig(_Frozen):
    """Who the environment's alarm topic notifies."""

    emails: tuple[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")], ...] = ()
    https_endpoints: tuple[Annotated[str, Field(pattern=r"^https://[^\s]+$")], ...] = ()

    @model_validator(mode="after")
    def _someone_listens(self) -> NotificationsConfig:
        if not self.emails and not self.https_endpoints:
            raise ValueError(
                "emails/https_endpoints: at least one subscriber, or alarms reach nobody"
            )
        return self


class ThresholdsConfig(_Frozen):
    """Alarm thresholds of the environment (the endpoints' 5xx and p90 sit with each endpoint)."""

    # /aws/sagemaker/Endpoints reports per instance, summed over its GPUs: the alarms scale
    # these per-GPU percentages by the instance's GPU count.
    gpu_utilization_percent: Annotated[int, Field(ge=1, le=100)]
    gpu_memory_percent: Annotated[int, Field(ge=1, le=100)]
    gpu_sustained_minutes: Annotated[int, Field(ge=5, le=120, multiple_of=5)]
    instances_at_max_minutes: Annotated[int, Field(ge=5, le=240, multiple_of=5)]
    lambda_errors_per_5min: Annotated[int, Field(ge=1)]
    lambda_throttles_per_5min: Annotated[int, Field(ge=1)]
    lambda_duration_share_of_timeout: Annotated[float, Field(gt=0, le=1)]
    api_5xx_per_5min: Annotated[int, Field(ge=1)]
    api_latency_p99_ms: Annotated[int, Field(ge=1, le=900_000)]
    dynamodb_throttles_per_5min: Annotated[int, Field(ge=1)]
    dynamodb_system_errors_per_5min: Annotated[int, Field(ge=1)]
    ttft_p99_ms: Annotated[int, Field(ge=1)]
    moderation_failed_closed_per_5min: Annotated[int, Field(ge=1)]
    content_filter_endings_per_5min: Annotated[int, Field(ge=1)]


class OperationsConfig(_Frozen):
    """Roll-outs, alarm notifications and thresholds of one environment."""

    notifications: NotificationsConfig
    rollout: RolloutConfig
    thresholds: ThresholdsConfig

    def rollback_window_s(self, alarm: EndpointAlarmKind) -> int:
        """Shortest time ``alarm`` needs to go off: its datapoints to alarm times its period."""
        if alarm in ("gpu_memory", "gpu_utilization"):
            return self.thresholds.gpu_sustained_minutes * 60
        # model_latency_p90 alarms on 2 of 3 five-minute periods, invocation_5xx on one.
        return ENDPOINT_ALARM_PERIOD_S * (2 if alarm == "model_latency_p90" else 1)


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
    hosting: HostingConfig = HostingConfig(mode="endpoints")
    operations: OperationsConfig
    # Absent: the environment has no customization stack.
    customization: CustomizationConfig | None = None
    # Absent: public AWS networking (endpoints, Lambda and downloads outside any VPC).
    network: NetworkConfig | None = None

    @model_validator(mode="after")
    def _account_and_region_together(self) -> EnvironmentConfig:
        if (self.account is None) != (self.region is None):
            raise ValueError("account/region: set both (a deployable environment) or neither")
        return self

    @model_validator(mode="after")
    def _hosting_is_consistent(self) -> EnvironmentConfig:
        hosting = self.hosting
        for role, settings in (("chat", self.chat), ("moderation", self.moderation)):
            if not hosting.uses_components:
                if settings.component is not None:
                    raise ValueError(
                        f"{role}.component: only with hosting.mode 'inference_components'"
                    )
                if settings.scaling is not None and settings.scaling.min_instances == 0:
                    raise ValueError(
                        f"{role}.scaling.min_instances: 0 needs hosting.mode "
                        "'inference_components'; a plain endpoint cannot scale to zero"
                    )
                continue
            if settings.component is None:
                raise ValueError(
                    f"{role}.component: required with hosting.mode 'inference_components'"
                )
            if settings.scaling is not None:
                raise ValueError(
                    f"{role}.scaling: counts a plain endpoint's instances; with inference "
                    "components set component.min_copies/max_copies instead"
                )
            zero = hosting.scale_to_zero
            if settings.component.min_copies == 0 and (zero is None or zero.off_hours is not None):
                raise ValueError(
                    f"{role}.component.min_copies: 0 needs hosting.scale_to_zero without "
                    "off_hours (with off_hours the minimum drops to 0 by schedule only)"
                )
        if hosting.scale_to_zero is not None and not hosting.uses_components:
            raise ValueError(
                "hosting.scale_to_zero: plain endpoints cannot scale to zero; set "
                "hosting.mode 'inference_components'"
            )
        return self

    @model_validator(mode="after")
    def _promoted_package_is_this_environments(self) -> EnvironmentConfig:
        arn = self.chat.model.model_package_arn
        if arn is None:
            return self
        match = re.match(_MODEL_PACKAGE_ARN, arn)
        assert match is not None  # the field's pattern
        group = f"chatbot-{self.name}-chat"
        if match["group"] != group:
            raise ValueError(
                f"chat.model.model_package_arn: the package belongs to group {match['group']!r}, "
                f"not this environment's {group!r}"
            )
        for field in ("account", "region"):
            expected = getattr(self, field)
            if expected is not None and match[field] != expected:
                raise ValueError(
                    f"chat.model.model_package_arn: {field} {match[field]} is not this "
                    f"environment's {expected}"
                )
        return self

    @model_validator(mode="after")
    def _rollout_fits_endpoints(self) -> EnvironmentConfig:
        rollout = self.operations.rollout
        prefix = "operations.rollout"
        for role, endpoint in (("chat", self.chat), ("moderation", self.moderation)):
            count = endpoint.initial_instance_count
            percent = rollout.canary_size_percent or rollout.linear_step_percent
            if percent is not None:
                field = (
                    "canary_size_percent"
                    if rollout.traffic_shifting == "CANARY"
                    else "linear_step_percent"
                )
                if count < 2:
                    raise ValueError(
                        f"{prefix}.traffic_shifting: {rollout.traffic_shifting} needs at least 2 "
                        f"instances to shift a share of; {role}.initial_instance_count is {count} "
                        "(use ALL_AT_ONCE)"
                    )
                if percent * count < 100:
                    raise ValueError(
                        f"{prefix}.{field}: {percent}% of {role}'s {count} instances is less than "
                        "one instance"
                    )
            # The green fleet downloads and starts before any traffic step begins.
            needed = (
                endpoint.model_data_download_timeout_s
                + endpoint.container_startup_health_check_timeout_s
                + rollout.baking_periods * rollout.wait_interval_s
                + rollout.termination_wait_s
            )
            if rollout.max_execution_timeout_s < needed:
                raise ValueError(
                    f"{prefix}.max_execution_timeout_s: {rollout.max_execution_timeout_s} s does "
                    f"not cover {role}'s download ({endpoint.model_data_download_timeout_s} s) + "
                    f"start-up ({endpoint.container_startup_health_check_timeout_s} s) + "
                    f"{rollout.baking_periods} baking period(s) of {rollout.wait_interval_s} s + "
                    f"termination wait ({rollout.termination_wait_s} s) = {needed} s"
                )
        for alarm in rollout.rollback_alarms:
            window = self.operations.rollback_window_s(alarm)
            if rollout.wait_interval_s < window:
                raise ValueError(
                    f"{prefix}.wait_interval_s: a {rollout.wait_interval_s} s baking period ends "
                    f"before rollback alarm {alarm} can go off ({window} s)"
                )
        return self

    @model_validator(mode="after")
    def _gpu_memory_alarm_above_preallocation(self) -> EnvironmentConfig:
        # vLLM reserves gpu_memory_utilization of every GPU at start: that much is the baseline.
        threshold = self.operations.thresholds.gpu_memory_percent
        for role, endpoint in (("chat", self.chat), ("moderation", self.moderation)):
            reserved = endpoint.model.gpu_memory_utilization * 100
            if threshold <= reserved:
                raise ValueError(
                    f"operations.thresholds.gpu_memory_percent: {threshold}% would always be in "
                    f"alarm: {role}'s engine reserves {reserved:g}% of GPU memory at start "
                    f"({role}.model.gpu_memory_utilization)"
                )
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
