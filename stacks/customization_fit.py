"""What the customization jobs need per GPU: a memory estimate for training and for evaluation.

Training (``customize.train``): the frozen weights in the training dtype (or NF4 4-bit),
sharded over the instance's GPUs by FSDP; the trainable parameters with their gradient and
AdamW state in float32; activations at the configured per-GPU batch and sequence length
(with gradient checkpointing: each layer's input, plus one layer recomputed at a time); the
logits and their float32 loss copies; and, when sharded, two decoder layers gathered at
once. Evaluation (vLLM, tensor parallel as the chat endpoint runs): the serving-dtype weights
split over the tensor-parallel GPUs, the KV cache of one full-length sequence and the
engine's profiling activations. Calibrated against the device measurement in
docs/benchmarks.md (20.6 B GPT-NeoX shape, LoRA r=16, batch 8 x 512: estimated 46.6 GB,
measured peak 46.3 GB). No library offers this for a SageMaker instance catalog, hence ours.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACTIVATION_BYTES_PER_TOKEN_HIDDEN",
    "LORA_MODULE_SHAPES",
    "MemoryEstimate",
    "evaluation_memory_per_gpu",
    "lora_parameters",
    "training_memory_per_gpu",
]

GB = 1e9
# Activation bytes of one transformer layer per token per hidden unit in 16-bit training,
# attention scores excluded (SDPA / flash attention): Korthikanti et al. 2022, "Reducing
# Activation Recomputation in Large Transformer Models", s*b*h*34.
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34
# Logits per token per vocabulary entry: the bf16 logits, their float32 copy for the loss and
# its float32 gradient (float32 training: three float32 tensors).
LOGITS_BYTES = {True: 2 + 4 + 4, False: 4 + 4 + 4}
# Trainable parameter in float32 + its gradient + AdamW's two moments.
TRAINABLE_BYTES = 4 + 4 + 8
# Full training on top of float32 weights: gradient + AdamW's two moments.
FULL_TRAINING_EXTRA_BYTES = 4 + 8
# NF4 with double quantization: 4 bits plus about 3 % of block constants; embeddings and the
# output layer stay in bf16.
NF4_BYTES = 0.5 * 1.03
# Decoder layers FSDP holds unsharded at once (the current one and the prefetched next).
FSDP_GATHERED_LAYERS = 2

# LoRA target modules as (input, output) in units of the hidden size, for the families the
# chat models come from (GPT-NeoX; Llama-style with full-width k/v as an upper bound).
LORA_MODULE_SHAPES: dict[str, tuple[int, int]] = {
    "query_key_value": (1, 3),
    "dense": (1, 1),
    "dense_h_to_4h": (1, 4),
    "dense_4h_to_h": (4, 1),
    "q_proj": (1, 1),
    "k_proj": (1, 1),
    "v_proj": (1, 1),
    "o_proj": (1, 1),
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory one GPU needs, by part, in GB (10^9 bytes)."""

    weights_gb: float
    trainable_gb: float
    activations_gb: float
    logits_gb: float
    gathered_gb: float = 0.0

    @property
    def total_gb(self) -> float:
        """Everything together."""
        return (
            self.weights_gb
            + self.trainable_gb
            + self.activations_gb
            + self.logits_gb
            + self.gathered_gb
        )

    def describe(self) -> str:
        """One line naming each part, for error messages."""
        return (
            f"{self.total_gb:.1f} GB per GPU (weights {self.weights_gb:.1f}, trainable state "
            f"{self.trainable_gb:.1f}, activations {self.activations_gb:.1f}, logits "
            f"{self.logits_gb:.1f}, gathered layers {self.gathered_gb:.1f})"
        )


def lora_parameters(hidden_size: int, num_layers: int, rank: int, targets: list[str]) -> int:
    """LoRA parameters: ``rank x (in + out)`` per target module per layer.

    Raises
    ------
    ValueError
        For a target module whose shape is not in :data:`LORA_MODULE_SHAPES`.
    """
    unknown = [name for name in targets if name not in LORA_MODULE_SHAPES]
    if unknown:
        raise ValueError(
            f"lora_target_modules: unknown module(s) {', '.join(unknown)} "
            f"(known: {', '.join(LORA_MODULE_SHAPES)})"
        )
    per_layer = sum(sum(LORA_MODULE_SHAPES[name]) * hidden_size for name in targets)
    return rank * per_layer * num_layers


def training_memory_per_gpu(
    *,
    parameters_billion: float,
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    method: str,
    quantization: str,
    bf16: bool,
    gradient_checkpointing: bool,
    batch_size: int,
    max_seq_len: int,
    lora_rank: int,
    lora_targets: list[str],
    gpus: int,
) -> MemoryEstimate:
    """Memory one GPU needs to train, as ``customize.train`` runs on ``gpus`` GPUs.

    Parameters
    ----------
    parameters_billion, hidden_size, num_layers, vocab_size
        The model.
    method, quantization, bf16, gradient_checkpointing, batch_size, max_seq_len, lora_rank,
    lora_targets
        The training settings (``batch_size`` per GPU), as the job's hyperparameters.
    gpus
        GPUs of the instance; FSDP shards over all of them unless ``quantization`` is
        ``4bit`` (QLoRA runs on one GPU).
    """
    parameters = parameters_billion * 1e9
    embeddings = 2 * vocab_size * hidden_size  # input embedding and output layer
    shards = 1 if quantization == "4bit" else gpus
    if quantization == "4bit":
        weights = (parameters - embeddings) * NF4_BYTES + embeddings * 2
    else:
        weights = parameters * (2 if bf16 and method == "lora" else 4)
    trainable: float
    if method == "lora":
        trainable = (
            lora_parameters(hidden_size, num_layers, lora_rank, lora_targets) * TRAINABLE_BYTES
        )
    else:
        trainable = parameters * FULL_TRAINING_EXTRA_BYTES
    tokens = batch_size * max_seq_len
    element = 2 if bf16 else 4
    layer_activations = tokens * hidden_size * ACTIVATION_BYTES_PER_TOKEN_HIDDEN * element / 2
    if gradient_checkpointing:
        activations = num_layers * tokens * hidden_size * element + layer_activations
    else:
        activations = num_layers * layer_activations
    logits = tokens * vocab_size * LOGITS_BYTES[bf16]
    gathered = 0.0
    if shards > 1:
        layer_bytes = (parameters - embeddings) / num_layers * (2 if bf16 else 4)
        gathered = FSDP_GATHERED_LAYERS * layer_bytes
    return MemoryEstimate(
        weights_gb=weights / shards / GB,
        trainable_gb=trainable / shards / GB,
        activations_gb=activations / GB,
        logits_gb=logits / GB,
        gathered_gb=gathered / GB,
    )


def evaluation_memory_per_gpu(
    *,
    parameters_billion: float,
    hidden_size: int,
    num_layers: int,
    vocab_size: int,
    dtype_bytes: int,
    tensor_parallel_degree: int,
    max_model_len: int,
) -> MemoryEstimate:
    """Memory one GPU needs for the evaluation job's vLLM engine (tensor parallel).

    vLLM refuses to start unless the weights, its profiling pass (``max_model_len`` tokens
    of activations and logits) and the KV cache of at least one ``max_model_len`` sequence
    fit in ``gpu_memory_utilization`` of each GPU.
    """
    tp = tensor_parallel_degree
    weights = parameters_billion * 1e9 * dtype_bytes / tp
    kv_cache = 2 * num_layers * hidden_size * dtype_bytes * max_model_len / tp
    profile = max_model_len * (4 * vocab_size + 16 * hidden_size) / tp
    return MemoryEstimate(
        weights_gb=weights / GB,
        trainable_gb=0.0,
        activations_gb=(kv_cache + profile) / GB,
        logits_gb=0.0,
    )
