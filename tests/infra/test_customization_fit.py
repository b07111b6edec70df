"""The customization memory rule: each part with its numbers, and the config check built on it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from stacks.config import ENVIRONMENTS_CONTEXT_KEY, ConfigError, load_environment
from stacks.customization_fit import (
    evaluation_memory_per_gpu,
    lora_parameters,
    training_memory_per_gpu,
)

NEOX_20B: dict[str, Any] = {"hidden_size": 6144, "num_layers": 44, "vocab_size": 50432}
LORA_16: dict[str, Any] = {
    "method": "lora",
    "bf16": True,
    "gradient_checkpointing": True,
    "batch_size": 8,
    "max_seq_len": 512,
    "lora_rank": 16,
    "lora_targets": ["query_key_value", "dense"],
}


def _customization(context: dict[str, Any], env: str, **changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(context)
    section = changed[ENVIRONMENTS_CONTEXT_KEY][env]["customization"]
    for key, value in changes.items():
        if key in section:
            section[key] = value
        else:
            section["training"][key] = value
    return changed


def test_lora_parameters_match_what_peft_trains() -> None:
    # The device run's log: trainable_parameters=25952256 for r=16 on query_key_value and
    # dense of the 44-layer, 6144-wide shape: 16 x 44 x (6144 x (1+3) + 6144 x (1+1)).
    assert lora_parameters(6144, 44, 16, ["query_key_value", "dense"]) == 25_952_256
    with pytest.raises(ValueError, match="unknown module"):
        lora_parameters(6144, 44, 16, ["c_attn"])


def test_training_estimate_matches_the_h200_measurement() -> None:
    # docs/benchmarks.md: 20.55 B random GPT-NeoX-20B shape, one H200, peak 43.11 GiB.
    measured_gb = 43.11 * 2**30 / 1e9
    need = training_memory_per_gpu(
        parameters_billion=20.55, **NEOX_20B, quantization="none", gpus=1, **LORA_16
    )
    assert need.weights_gb == pytest.approx(41.1)  # bf16
    assert need.trainable_gb == pytest.approx(0.415, abs=0.001)  # 16 B per LoRA parameter
    assert need.activations_gb == pytest.approx(2.215 + 0.856, abs=0.01)  # inputs + 1 layer
    assert need.logits_gb == pytest.approx(2.066, abs=0.01)  # 8 x 512 x 50432 x 10 B
    assert need.gathered_gb == 0
    assert need.total_gb == pytest.approx(measured_gb, rel=0.03)


def test_fsdp_divides_weights_and_state_but_not_activations() -> None:
    one = training_memory_per_gpu(
        parameters_billion=20.6, **NEOX_20B, quantization="none", gpus=1, **LORA_16
    )
    four = training_memory_per_gpu(
        parameters_billion=20.6, **NEOX_20B, quantization="none", gpus=4, **LORA_16
    )
    assert four.weights_gb == pytest.approx(one.weights_gb / 4)
    assert four.trainable_gb == pytest.approx(one.trainable_gb / 4)
    assert four.activations_gb == one.activations_gb
    assert four.logits_gb == one.logits_gb
    # Two decoder layers held whole at once: 2 x (20.6e9 - 2 x 50432 x 6144) / 44 x 2 B.
    assert four.gathered_gb == pytest.approx(1.816, abs=0.01)
    assert four.total_gb == pytest.approx(17.4, abs=0.1)  # fits 90 % of a 24 GB A10G


def test_four_bit_weights_and_checkpointing_numbers() -> None:
    qlora = training_memory_per_gpu(
        parameters_billion=20.6, **NEOX_20B, quantization="4bit", gpus=4, **LORA_16
    )
    # NF4 for the layers, bf16 embeddings and output layer; one GPU whatever the instance has.
    assert qlora.weights_gb == pytest.approx((20.6e9 - 619.7e6) * 0.515 / 1e9 + 1.2394, abs=0.01)
    assert qlora.gathered_gb == 0
    assert qlora.total_gb == pytest.approx(17.1, abs=0.1)
    no_checkpointing = training_memory_per_gpu(
        parameters_billion=20.6,
        **NEOX_20B,
        quantization="none",
        gpus=1,
        **{**LORA_16, "gradient_checkpointing": False},
    )
    # Every layer keeps its activations: 44 x 8 x 512 x 6144 x 34 B = 37.7 GB.
    assert no_checkpointing.activations_gb == pytest.approx(37.65, abs=0.05)
    full = training_memory_per_gpu(
        parameters_billion=20.6,
        **NEOX_20B,
        quantization="none",
        gpus=8,
        **{**LORA_16, "method": "full"},
    )
    # Full training: float32 weights (4 B) + gradient and AdamW moments (12 B), over 8 GPUs.
    assert full.weights_gb + full.trainable_gb == pytest.approx(20.6 * 16 / 8)


def test_evaluation_estimate_for_vllm_tensor_parallel() -> None:
    tp4 = evaluation_memory_per_gpu(
        parameters_billion=20.6,
        **NEOX_20B,
        dtype_bytes=2,
        tensor_parallel_degree=4,
        max_model_len=2048,
    )
    assert tp4.weights_gb == pytest.approx(10.3)
    # KV cache of one 2048-token sequence: 2 x 44 x 6144 x 2 B x 2048 / 4 = 0.55 GB.
    assert tp4.activations_gb == pytest.approx(0.554 + 0.154, abs=0.01)
    tp1 = evaluation_memory_per_gpu(
        parameters_billion=20.6,
        **NEOX_20B,
        dtype_bytes=2,
        tensor_parallel_degree=1,
        max_model_len=2048,
    )
    assert tp1.total_gb == pytest.approx(44.0, abs=0.1)  # over 90 % of a 48 GB L40S


def test_config_refuses_training_that_does_not_fit(cdk_json_context: dict[str, Any]) -> None:
    # 20.6 B in bf16 on one 24 GB A10G: 41.2 GB of weights alone.
    context = _customization(cdk_json_context, "prod", training_instance_type="ml.g5.2xlarge")
    with pytest.raises(ConfigError) as raised:
        load_environment(context, "prod")
    message = str(raised.value)
    assert "customization.training_instance_type: training the chat model's 20.6B" in message
    assert "sharded over 1 GPU(s)) needs 46.8 GB per GPU (weights 41.2" in message
    assert "(21.6 GB)" in message
    # The same instance with QLoRA fits: 17.1 GB.
    context = _customization(context, "prod", quantization="4bit")
    customization = load_environment(context, "prod").customization
    assert customization is not None
    assert customization.training.hyperparameters()["save_format"] == "adapter"
    # Batch 16 per GPU on the four A10Gs of ml.g5.12xlarge doubles activations and logits: 22.5 GB.
    context = _customization(cdk_json_context, "prod", batch_size=16)
    with pytest.raises(ConfigError, match=r"needs 22\.5 GB per GPU"):
        load_environment(context, "prod")


def test_config_refuses_evaluation_that_does_not_fit(cdk_json_context: dict[str, Any]) -> None:
    # vLLM at the endpoint's tensor_parallel_degree 4 needs four GPUs.
    context = _customization(cdk_json_context, "prod", evaluation_instance_type="ml.g6e.xlarge")
    with pytest.raises(ConfigError, match="tensor_parallel_degree 4, which must divide"):
        load_environment(context, "prod")
    # dev's 2.8 B at tensor parallel 1 fits a 16 GB T4 (6.8 GB of 14.4 GB)...
    context = _customization(cdk_json_context, "dev", evaluation_instance_type="ml.g4dn.xlarge")
    assert load_environment(context, "dev").customization is not None
    # ...and 8 B (16 GB in float16) does not.
    context = copy.deepcopy(context)
    context[ENVIRONMENTS_CONTEXT_KEY]["dev"]["chat"]["model"]["parameters_billion"] = 8.0
    with pytest.raises(ConfigError) as raised:
        load_environment(context, "dev")
    message = str(raised.value)
    assert "customization.evaluation_instance_type: vLLM serving the chat model's 8.0B" in message
    assert "(14.4 GB)" in message


def test_sharded_training_estimate_matches_the_two_h200_measurement() -> None:
    # docs/benchmarks.md: the same run sharded by FSDP over two H200s, rank 0 peak 25.82 GiB.
    measured_gb = 25.82 * 2**30 / 1e9
    need = training_memory_per_gpu(
        parameters_billion=20.55, **NEOX_20B, quantization="none", gpus=2, **LORA_16
    )
    assert need.weights_gb == pytest.approx(20.55)
    assert need.total_gb == pytest.approx(measured_gb, rel=0.03)
