"""Environment settings: each invalid value is refused, naming the environment and field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.base_image import resolve_base_image
from stacks.config import ENVIRONMENTS_CONTEXT_KEY, BaseImageConfig, ConfigError, load_environment
from stacks.instance_catalog import GPU_INSTANCE_CATALOG, GpuInstanceType


def _with(context: dict[str, Any], env: str, path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(context)
    node = changed[ENVIRONMENTS_CONTEXT_KEY][env]
    *parents, leaf = path.split(".")
    for part in parents:
        node = node[part]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return changed


_DELETE = object()


@pytest.mark.parametrize("env", ["dev", "staging", "prod"])
def test_cdk_json_environments_are_valid(cdk_json_context: dict[str, Any], env: str) -> None:
    config = load_environment(cdk_json_context, env)
    assert config.name == env
    assert config.endpoint_names == {
        "chat": f"chatbot-{env}-chat",
        "moderation": f"chatbot-{env}-moderation",
    }


def test_issue_settings_per_environment(cdk_json_context: dict[str, Any]) -> None:
    dev = load_environment(cdk_json_context, "dev")
    prod = load_environment(cdk_json_context, "prod")
    assert (dev.account, dev.region, dev.protect_data) == (None, None, False)
    assert dev.chat.model.hf_repo_id == "togethercomputer/RedPajama-INCITE-Chat-3B-v1"
    assert (dev.chat.instance_type, dev.chat.tensor_parallel_degree) == ("ml.g5.2xlarge", 1)
    assert dev.moderation.model.hf_repo_id == "togethercomputer/GPT-JT-Moderation-6B"
    assert prod.chat.model.hf_repo_id == "togethercomputer/GPT-NeoXT-Chat-Base-20B"
    assert (prod.chat.instance_type, prod.chat.tensor_parallel_degree) == ("ml.g5.12xlarge", 4)
    assert prod.chat.container_startup_health_check_timeout_s == 3600
    assert prod.chat.scaling is not None
    assert (prod.chat.scaling.min_instances, prod.chat.scaling.max_instances) == (2, 8)
    assert prod.protect_data is True


def test_max_instances_cover_the_roll_outs(cdk_json_context: dict[str, Any]) -> None:
    dev, staging, prod = (load_environment(cdk_json_context, e) for e in ("dev", "staging", "prod"))
    # Components: max_copies plus the copy a rolling step adds, one copy per instance here.
    assert (dev.chat.max_instances, dev.moderation.max_instances) == (1 + 1, 1 + 1)
    assert (staging.chat.max_instances, staging.moderation.max_instances) == (2 + 1, 2 + 1)
    # Plain endpoints: the green fleet beside the blue one, both at the scaling maximum.
    assert (prod.chat.max_instances, prod.moderation.max_instances) == (2 * 8, 2 * 4)


def test_settings_are_frozen(cdk_json_context: dict[str, Any]) -> None:
    config = load_environment(cdk_json_context, "dev")
    with pytest.raises(ValueError, match="frozen"):
        config.chat.tensor_parallel_degree = 2  # type: ignore[misc]


def test_unknown_environment_lists_known_ones(cdk_json_context: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"unknown environment 'qa'.*dev, prod, staging"):
        load_environment(cdk_json_context, "qa")


@pytest.mark.parametrize(
    ("env", "path", "value", "field", "reason"),
    [
        ("dev", "chat.instance_type", "ml.m5.2xlarge", "chat", "instance_type"),
        ("dev", "chat.instance_type", "g5.2xlarge", "chat", "not a known SageMaker GPU"),
        ("prod", "chat.tensor_parallel_degree", 3, "chat", "tensor_parallel_degree: 3 must divide"),
        ("dev", "chat.tensor_parallel_degree", 2, "chat", "tensor_parallel_degree: 2"),
        ("dev", "chat.tensor_parallel_degree", 0, "chat.tensor_parallel_degree", "greater than"),
        (
            "dev",
            "moderation.container_startup_health_check_timeout_s",
            59,
            "moderation.container_startup_health_check_timeout_s",
            "greater than or equal to 60",
        ),
        (
            "prod",
            "chat.model_data_download_timeout_s",
            3601,
            "chat.model_data_download_timeout_s",
            "less than or equal to 3600",
        ),
        ("dev", "chat.volume_size_gb", 100, "chat", "volume_size_gb: ml.g5.2xlarge is NVMe-backed"),
        ("prod", "chat.instance_type", "ml.g5.2xlarge", "chat", "tensor_parallel_degree"),
        ("prod", "chat.initial_instance_count", 1, "chat", "initial_instance_count"),
        ("prod", "chat.scaling.min_instances", 9, "chat", "initial_instance_count"),
        ("dev", "chat.model.dtype", "int3", "chat.model.dtype", "float16"),
        ("dev", "front_door.auth", "apikey", "front_door.auth", "iam"),
        ("dev", "front_door.blocked_labels", ["spam"], "front_door.blocked_labels", "casual"),
        ("dev", "front_door.log_retention_days", 10, "front_door", "log_retention_days"),
        ("dev", "account", "111111111111", "(root)", "account/region"),
        ("staging", "region", "moon-1", "region", "pattern"),
        ("dev", "chat.turbo", True, "chat.turbo", "Extra inputs"),
        ("dev", "chat.instance_type", _DELETE, "chat.instance_type", "Field required"),
        ("dev", "base_image.framework", _DELETE, "base_image", "either uri"),
        (
            "dev",
            "customization.training_instance_type",
            "ml.m5.xlarge",
            "customization",
            "training_instance_type: 'ml.m5.xlarge' is not a known SageMaker GPU",
        ),
        (
            "dev",
            "customization.evaluation_instance_type",
            "ml.trn1.2xlarge",
            "customization",
            "evaluation_instance_type: 'ml.trn1.2xlarge' is not a known SageMaker GPU",
        ),
        (
            "dev",
            "customization.evaluation_instance_type",
            "ml.p4d.24xlarge",
            "customization",
            "evaluation_instance_type: SageMaker does not run processing jobs on 'ml.p4d.24xlarge'",
        ),
        ("dev", "customization.use_spot", "sometimes", "customization.use_spot", "boolean"),
        ("dev", "customization.use_spot", _DELETE, "customization.use_spot", "Field required"),
        ("dev", "customization.epochs", 3, "customization.epochs", "Extra inputs"),
        (
            "dev",
            "customization.training.batch_size",
            64,
            "(root)",
            "customization.training_instance_type: training the chat model's 2.8B parameters",
        ),
        (
            "dev",
            "customization.training.lora_target_modules",
            ["q_lin"],
            "customization.training",
            "lora_target_modules: unknown or none (q_lin)",
        ),
        (
            "dev",
            "customization.training.method",
            "full",
            "(root)",
            "customization.training_instance_type: training the chat model's 2.8B parameters (full",
        ),
        ("dev", "customization.model_shape", _DELETE, "customization.model_shape", "required"),
    ],
)
def test_invalid_setting_names_environment_and_field(
    cdk_json_context: dict[str, Any], env: str, path: str, value: Any, field: str, reason: str
) -> None:
    context = _with(cdk_json_context, env, path, value)
    with pytest.raises(ConfigError) as raised:
        load_environment(context, env)
    message = str(raised.value)
    assert f"environment {env!r}: {field}" in message
    assert reason in message


def test_customization_is_optional_and_frozen(cdk_json_context: dict[str, Any]) -> None:
    dev = load_environment(cdk_json_context, "dev").customization
    assert dev is not None
    assert (dev.training_instance_type, dev.evaluation_instance_type, dev.use_spot) == (
        "ml.g5.2xlarge",
        "ml.g5.xlarge",
        True,
    )
    with pytest.raises(ValueError, match="frozen"):
        dev.use_spot = False  # type: ignore[misc]
    disabled = _with(cdk_json_context, "dev", "customization", _DELETE)
    assert load_environment(disabled, "dev").customization is None


@pytest.mark.parametrize("env", ["staging", "prod"])
def test_production_model_is_customized_on_the_endpoints_instance_type(
    cdk_json_context: dict[str, Any], env: str
) -> None:
    config = load_environment(cdk_json_context, env)
    customization = config.customization
    assert customization is not None
    # Evaluation generates with vLLM as the chat endpoint serves: same instance type.
    assert customization.evaluation_instance_type == config.chat.instance_type
    assert customization.training_instance_type == "ml.g5.12xlarge"
    assert customization.use_spot is True
    assert customization.training.hyperparameters() == {
        "method": "lora",
        "quantization": "none",
        "bf16": "true",
        "gradient_checkpointing": "true",
        "batch_size": "8",
        "max_seq_len": "512",
        "lora_rank": "16",
        "lora_alpha": "32",
        "lora_target_modules": "query_key_value,dense",
    }


def test_sagemaker_job_instance_lists_come_from_the_service_model() -> None:
    from stacks.config import _sagemaker_instance_types

    training = _sagemaker_instance_types("TrainingInstanceType")
    processing = _sagemaker_instance_types("ProcessingInstanceType")
    assert set(GPU_INSTANCE_CATALOG) <= training
    assert {"ml.g5.xlarge", "ml.g6e.xlarge", "ml.m5.xlarge"} <= processing
    assert "ml.p5.48xlarge" not in processing


def test_model_that_does_not_fit_its_gpus_is_refused(cdk_json_context: dict[str, Any]) -> None:
    # 20.6B fp16 = 41.2 GB > 90% of the single 24 GB A10G of a g5.2xlarge.
    context = _with(cdk_json_context, "prod", "chat.tensor_parallel_degree", 1)
    context = _with(context, "prod", "chat.instance_type", "ml.g5.2xlarge")
    with pytest.raises(ConfigError, match=r"environment 'prod': chat: model.parameters_billion"):
        load_environment(context, "prod")
    # The same model sharded over the 4 GPUs of a g5.12xlarge fits (41.2 <= 86.4 GB).
    assert load_environment(cdk_json_context, "prod").chat.model.weights_gb == pytest.approx(41.2)


def test_float32_doubles_the_weight_size(cdk_json_context: dict[str, Any]) -> None:
    # 6B in fp32 = 24 GB > 21.6 GB: does not fit one A10G, while fp16 (12 GB) does.
    context = _with(cdk_json_context, "dev", "moderation.model.dtype", "float32")
    with pytest.raises(ConfigError, match=r"moderation: model\.parameters_billion"):
        load_environment(context, "dev")


def test_volume_size_is_accepted_on_ebs_backed_instances(cdk_json_context: dict[str, Any]) -> None:
    context = _with(cdk_json_context, "dev", "chat.instance_type", "ml.p3.2xlarge")
    context = _with(context, "dev", "chat.volume_size_gb", 100)
    assert load_environment(context, "dev").chat.volume_size_gb == 100


def test_missing_environments_context_is_reported() -> None:
    with pytest.raises(ConfigError, match="chatbot:environments"):
        load_environment({}, "dev")


def test_catalog_covers_required_families() -> None:
    families = {entry.family for entry in GPU_INSTANCE_CATALOG.values()}
    assert {"g5", "g6", "g6e", "p4d", "p4de", "p5", "p5e"} <= families
    g5 = GpuInstanceType.parse("ml.g5.12xlarge")
    assert (g5.gpu_count, g5.gpu_memory_gb, g5.nvme_backed) == (4, 24, True)
    assert GpuInstanceType.parse("ml.p5.48xlarge").total_gpu_memory_gb == 640
    assert GpuInstanceType.parse("ml.p3.2xlarge").nvme_backed is False


def test_base_image_matches_the_sagemaker_sdk_catalog() -> None:
    from sagemaker.core import image_uris

    for region in ("us-east-1", "eu-west-1", "ap-northeast-1"):
        ours = resolve_base_image(BaseImageConfig(framework="vllm", version="0.30.0"), region)
        sdk = image_uris.retrieve(
            "vllm",
            region=region,
            version="0.30.0",
            image_scope="inference",
            instance_type="ml.g5.2xlarge",
        )
        assert ours == sdk
    lmi = resolve_base_image(BaseImageConfig(framework="djl-lmi", version="0.30.0"), "eu-west-1")
    assert lmi == image_uris.retrieve("djl-lmi", region="eu-west-1", version="0.30.0")


def test_base_image_lookup_for_env_agnostic_and_pinned() -> None:
    agnostic = resolve_base_image(BaseImageConfig(framework="vllm", version="0.30.0"), None)
    assert agnostic.startswith("763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.30.0-gpu")
    pinned = BaseImageConfig(uri="vllm/vllm-openai:v0.11.0")
    assert resolve_base_image(pinned, "eu-west-1") == "vllm/vllm-openai:v0.11.0"
    with pytest.raises(ValueError, match=r"base_image.version.*0.1.0"):
        resolve_base_image(BaseImageConfig(framework="vllm", version="0.1.0"), "us-east-1")
