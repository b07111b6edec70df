"""Training hyperparameters: the fields a job can be told, mode defaults, SageMaker's strings."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from customize.data import Mode

__all__ = [
    "MODE_DEFAULTS",
    "Hyperparameters",
    "parse_overrides",
    "resolve_hyperparameters",
]

# Continued pre-training shifts the model's knowledge rather than its manners: more passes
# over the data at a lower learning rate, and all weights by default, as the Bedrock
# customization guidance advises. Fine-tuning teaches a format: a few epochs of LoRA suffice.
MODE_DEFAULTS: dict[Mode, dict[str, Any]] = {
    Mode.FINE_TUNING: {
        "method": "lora",
        "epochs": 3.0,
        "learning_rate": 2e-4,
        "warmup_ratio": 0.03,
        "lora_rank": 8,
        "lora_alpha": 16,
    },
    Mode.CONTINUED_PRE_TRAINING: {
        "method": "full",
        "epochs": 5.0,
        "learning_rate": 2e-5,
        "warmup_ratio": 0.1,
        "lora_rank": 16,
        "lora_alpha": 32,
    },
}

_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Hyperparameters:
    """Everything a training run can be told; fields left unset take the mode's default.

    ``method`` is ``lora`` or ``full``. ``lora_layers`` adapts only the top N decoder layers
    (0: all), which on CPU saves most of the backward pass. ``max_steps`` above 0 stops early.
    ``eval_steps`` 0 evaluates once per epoch. ``checkpoint_steps`` above 0 saves the
    trainable weights and optimizer state that often, and a restarted job resumes from them.
    ``save_dtype`` ``auto`` saves bfloat16 when training in bf16, else float32.

    Large models: ``weights_dtype`` ``auto`` holds the frozen base in bfloat16 for LoRA in
    bf16 (float32 otherwise: full training keeps float32 master weights); ``quantization``
    ``4bit`` loads it as NF4 through bitsandbytes (QLoRA; one GPU); ``gradient_checkpointing``
    recomputes each decoder layer in the backward pass instead of keeping its activations;
    ``distributed`` ``auto`` starts one process per GPU under ``torchrun`` and shards the model
    with FSDP when the machine has several GPUs (``batch_size`` is then per GPU);
    ``save_format`` ``adapter`` saves the LoRA adapter alone instead of merged weights.
    """

    mode: Mode = Mode.FINE_TUNING
    method: str = "lora"
    epochs: float = 3.0
    learning_rate: float = 2e-4
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_seq_len: int = 512
    max_steps: int = 0
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: str = "q_proj,k_proj,v_proj,o_proj"
    lora_layers: int = 0
    eval_steps: int = 0
    checkpoint_steps: int = 0
    log_steps: int = 1
    seed: int = 42
    bf16: bool = False
    device: str = "auto"
    num_threads: int = 0
    save_dtype: str = "auto"
    base_model: str = ""
    weights_dtype: str = "auto"
    quantization: str = "none"
    gradient_checkpointing: bool = False
    distributed: str = "auto"
    save_format: str = "merged"

    def __post_init__(self) -> None:
        if self.method not in ("lora", "full"):
            raise ValueError(f"method: must be 'lora' or 'full', got {self.method!r}")
        positive = ("epochs", "learning_rate", "batch_size", "gradient_accumulation_steps")
        for name in (*positive, "max_seq_len", "lora_rank", "log_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: must be auto, cpu or cuda, got {self.device!r}")
        if self.save_dtype not in ("auto", *_DTYPES):
            raise ValueError(f"save_dtype: unknown dtype {self.save_dtype!r}")
        if self.weights_dtype not in ("auto", *_DTYPES):
            raise ValueError(f"weights_dtype: unknown dtype {self.weights_dtype!r}")
        if self.quantization not in ("none", "4bit"):
            raise ValueError(f"quantization: must be 'none' or '4bit', got {self.quantization!r}")
        if self.quantization == "4bit" and self.method != "lora":
            raise ValueError("quantization: 4bit trains LoRA adapters only; set method=lora")
        if self.distributed not in ("auto", "off"):
            raise ValueError(f"distributed: must be 'auto' or 'off', got {self.distributed!r}")
        if self.save_format not in ("merged", "adapter"):
            raise ValueError(
                f"save_format: must be 'merged' or 'adapter', got {self.save_format!r}"
            )
        if self.save_format == "adapter" and self.method != "lora":
            raise ValueError("save_format: adapter needs method=lora")
        if self.quantization == "4bit" and self.save_format != "adapter":
            # Merging into NF4 weights would lose the base's precision.
            raise ValueError("save_format: quantization=4bit saves the LoRA adapter; set adapter")

    @property
    def load_dtype(self) -> str:
        """The dtype the base weights are loaded in (before any 4-bit quantization)."""
        if self.weights_dtype != "auto":
            return self.weights_dtype
        return "bfloat16" if self.bf16 and self.method == "lora" else "float32"


def _coerce(name: str, value: Any, kind: Any) -> Any:
    # SageMaker hands hyperparameters over as strings; the Python SDK JSON-encodes them first.
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            decoded = value
        if not isinstance(decoded, (dict, list)):
            value = decoded
    try:
        if kind in ("bool", bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if kind in ("int", int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if kind in ("float", float):
            return float(value)
        if kind in ("Mode", Mode):
            return Mode(str(value))
        return str(value)
    except ValueError as error:
        raise ValueError(f"{name}: cannot read {value!r} as {kind}") from error


def resolve_hyperparameters(raw: Mapping[str, Any]) -> Hyperparameters:
    """Build hyperparameters from strings or JSON values, filling in the mode's defaults.

    Parameters
    ----------
    raw
        Names as in :class:`Hyperparameters` (dashes allowed for underscores); values as
        SageMaker writes them to ``hyperparameters.json`` (strings) or typed.

    Returns
    -------
    Hyperparameters
        The validated, frozen hyperparameters.

    Raises
    ------
    ValueError
        Naming the field, for an unknown name or a value that does not fit.
    """
    known = {item.name: item.type for item in fields(Hyperparameters)}
    normalized = {str(key).replace("-", "_"): value for key, value in raw.items()}
    # SageMaker adds its own sagemaker_* entries in script mode; they are not ours.
    normalized = {k: v for k, v in normalized.items() if not k.startswith("sagemaker_")}
    unknown = sorted(set(normalized) - set(known))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s): {', '.join(unknown)}")
    values = {name: _coerce(name, value, known[name]) for name, value in normalized.items()}
    mode = values.get("mode", Mode.FINE_TUNING)
    merged = {**MODE_DEFAULTS[mode], **values, "mode": mode}
    return Hyperparameters(**merged)


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """Read ``--name value`` / ``--name=value`` / bare ``--flag`` words as hyperparameters.

    Parameters
    ----------
    items
        Command-line words left over once the path options are parsed.

    Returns
    -------
    dict[str, str]
        Name to string value; a bare flag reads ``"true"``.

    Raises
    ------
    ValueError
        For a word that is not an option.
    """
    overrides: dict[str, str] = {}
    index = 0
    while index < len(items):
        item = items[index]
        if not item.startswith("--"):
            raise ValueError(
                f"unexpected argument {item!r}; hyperparameters go as --name value or --name=value"
            )
        name, separator, value = item[2:].partition("=")
        if not separator:
            # A bare flag (--bf16) is true; otherwise the next word is its value.
            following = items[index + 1] if index + 1 < len(items) else "--"
            value = "true" if following.startswith("--") else following
            index += 0 if following.startswith("--") else 1
        overrides[name] = value
        index += 1
    return overrides
