"""Training entrypoint, the same on SageMaker and locally: fine-tuning or continued pre-training.

The loop is our own rather than ``transformers.Trainer``: it is short, and it keeps the three
things this job is about in plain sight: loss on completion tokens only, the metric lines
that SageMaker metric definitions parse, and a merged safetensors model the chat backend
serves as is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot_contracts.training import METRIC_DEFINITIONS
from customize.data import Mode, read_jsonl

if TYPE_CHECKING:
    import torch

__all__ = [
    "METRIC_DEFINITIONS",
    "MODE_DEFAULTS",
    "Hyperparameters",
    "TrainingPaths",
    "TrainingResult",
    "main",
    "resolve_hyperparameters",
    "train",
]

SAGEMAKER_ROOT = Path("/opt/ml")

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


@dataclass(frozen=True)
class Hyperparameters:
    """Everything a training run can be told; fields left unset take the mode's default.

    ``method`` is ``lora`` or ``full``. ``lora_layers`` adapts only the top N decoder layers
    (0: all), which on CPU saves most of the backward pass. ``max_steps`` above 0 stops early.
    ``eval_steps`` 0 evaluates once per epoch. ``checkpoint_steps`` above 0 saves the
    trainable weights and optimizer state that often, and a restarted job resumes from them.
    ``save_dtype`` ``auto`` saves bfloat16 when training in bf16, else float32.
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
        if self.save_dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"save_dtype: unknown dtype {self.save_dtype!r}")


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


def _env_path(variable: str, default: Path) -> Path:
    return Path(os.environ.get(variable, str(default)))


@dataclass(frozen=True)
class TrainingPaths:
    """Where the job reads data and writes its results; SageMaker's layout unless overridden."""

    train_dir: Path = field(
        default_factory=lambda: _env_path("SM_CHANNEL_TRAIN", SAGEMAKER_ROOT / "input/data/train")
    )
    validation_dir: Path = field(
        default_factory=lambda: _env_path(
            "SM_CHANNEL_VALIDATION", SAGEMAKER_ROOT / "input/data/validation"
        )
    )
    base_model_dir: Path = field(
        default_factory=lambda: _env_path("SM_CHANNEL_MODEL", SAGEMAKER_ROOT / "input/data/model")
    )
    model_dir: Path = field(
        default_factory=lambda: _env_path("SM_MODEL_DIR", SAGEMAKER_ROOT / "model")
    )
    output_data_dir: Path = field(
        default_factory=lambda: _env_path("SM_OUTPUT_DATA_DIR", SAGEMAKER_ROOT / "output/data")
    )
    hyperparameters_file: Path = field(
        default_factory=lambda: _env_path(
            "SM_HPS_FILE", SAGEMAKER_ROOT / "input/config/hyperparameters.json"
        )
    )
    # CheckpointConfig.LocalPath of the training job; SageMaker syncs it with S3, so a spot
    # job interrupted and restarted finds its last checkpoint here.
    checkpoint_dir: Path = field(
        default_factory=lambda: _env_path(
            "CUSTOMIZE_CHECKPOINT_DIR", SAGEMAKER_ROOT / "checkpoints"
        )
    )


@dataclass
class TrainingResult:
    """What a run produced: the saved model, its metrics file and the figures in it."""

    model_dir: Path
    metrics_file: Path
    metrics: dict[str, Any]


@dataclass(frozen=True)
class _Example:
    input_ids: list[int]
    labels: list[int]


def _read_channel(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{folder}: no .jsonl files in this channel")
    return [record for path in files for record in read_jsonl(path)]


def _encode(
    records: Sequence[Mapping[str, Any]], tokenizer: Any, hp: Hyperparameters
) -> list[_Example]:
    eos = [tokenizer.eos_token_id]
    examples = []
    for record in records:
        if hp.mode is Mode.FINE_TUNING:
            prompt = tokenizer(record["prompt"], add_special_tokens=False)["input_ids"]
            completion = (
                tokenizer(record["completion"], add_special_tokens=False)["input_ids"] + eos
            )
            # Only the completion is learned: the prompt is context, its tokens carry no loss.
            ids, labels = prompt + completion, [-100] * len(prompt) + completion
        else:
            ids = tokenizer(record["input"], add_special_tokens=False)["input_ids"] + eos
            labels = list(ids)
        # Validation has already refused over-long records; keep the end (the completion).
        examples.append(_Example(ids[-hp.max_seq_len :], labels[-hp.max_seq_len :]))
    return examples


def _collate(batch: Sequence[_Example], pad_id: int) -> dict[str, torch.Tensor]:
    import torch

    width = max(len(example.input_ids) for example in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        length = len(example.input_ids)
        ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        mask[row, :length] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _batches(
    examples: Sequence[_Example], hp: Hyperparameters, pad_id: int, generator: torch.Generator
) -> Iterator[tuple[float, dict[str, torch.Tensor]]]:
    import torch

    per_epoch = math.ceil(len(examples) / hp.batch_size)
    epoch = 0
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for index in range(per_epoch):
            chosen = order[index * hp.batch_size : (index + 1) * hp.batch_size]
            yield epoch + (index + 1) / per_epoch, _collate([examples[i] for i in chosen], pad_id)
        epoch += 1


def _resolve_device(hp: Hyperparameters) -> torch.device:
    import torch

    if hp.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no CUDA device")
    if hp.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(hp.device)


def _autocast(device: torch.device, hp: Hyperparameters) -> Any:
    import contextlib

    import torch

    if hp.bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _validation_loss(
    model: Any, examples: Sequence[_Example], hp: Hyperparameters, pad_id: int, device: torch.device
) -> float:
    import torch

    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), hp.batch_size):
            batch = {
                key: value.to(device)
                for key, value in _collate(examples[start : start + hp.batch_size], pad_id).items()
            }
            with _autocast(device, hp):
                loss = model(**batch).loss
            # The model averages over predicted tokens; weight each batch by its count of them.
            count = int((batch["labels"][:, 1:] != -100).sum())
            total += float(loss) * count
            tokens += count
    model.train()
    return total / max(tokens, 1)


def _log(**values: Any) -> None:
    parts = [
        f"{key}={value:.6g};" if isinstance(value, float) else f"{key}={value};"
        for key, value in values.items()
    ]
    print(" ".join(parts), flush=True)


def _attach_lora(model: Any, hp: Hyperparameters) -> Any:
    from peft import LoraConfig, get_peft_model

    layers = None
    if hp.lora_layers > 0:
        total = int(model.config.num_hidden_layers)
        layers = list(range(max(total - hp.lora_layers, 0), total))
    config = LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=[name.strip() for name in hp.lora_target_modules.split(",") if name.strip()],
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def train(hp: Hyperparameters, paths: TrainingPaths) -> TrainingResult:
    """Train, evaluate on the validation channel, merge and save the model.

    Parameters
    ----------
    hp
        Resolved hyperparameters (see :func:`resolve_hyperparameters`).
    paths
        Channels and output folders; the base model comes from ``hp.base_model`` when set,
        else from the ``model`` channel.

    Returns
    -------
    TrainingResult
        The model directory (``model.safetensors``, ``config.json``, tokenizer), and
        ``metrics.json`` in the output data directory with the loss history, the final
        validation loss and the training throughput in tokens per second.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    threads = hp.num_threads or int(os.environ.get("CUSTOMIZE_NUM_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(hp.seed)
    device = _resolve_device(hp)
    base = Path(hp.base_model) if hp.base_model else paths.base_model_dir
    tokenizer = AutoTokenizer.from_pretrained(base)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    model: Any = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if hp.method == "lora":
        model = _attach_lora(model, hp)
    model.to(device)
    model.train()

    train_examples = _encode(_read_channel(paths.train_dir), tokenizer, hp)
    validation_examples = _encode(_read_channel(paths.validation_dir), tokenizer, hp)
    updates_per_epoch = math.ceil(
        math.ceil(len(train_examples) / hp.batch_size) / hp.gradient_accumulation_steps
    )
    total_steps = (
        hp.max_steps if hp.max_steps > 0 else max(1, math.ceil(updates_per_epoch * hp.epochs))
    )
    eval_steps = hp.eval_steps if hp.eval_steps > 0 else updates_per_epoch
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    linear_schedule: Any = get_linear_schedule_with_warmup  # untyped in transformers
    scheduler = linear_schedule(optimizer, round(total_steps * hp.warmup_ratio), total_steps)
    _log(
        mode=hp.mode.value,
        method=hp.method,
        device=device.type,
        train_examples=len(train_examples),
        validation_examples=len(validation_examples),
        total_steps=total_steps,
        trainable_parameters=sum(parameter.numel() for parameter in trainable),
    )

    history: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
    initial = _validation_loss(model, validation_examples, hp, pad_id, device)
    validation.append({"step": 0, "validation_loss": initial})
    _log(step=0, validation_loss=initial)

    generator = torch.Generator().manual_seed(hp.seed)
    batches = _batches(train_examples, hp, pad_id, generator)
    trained_tokens, train_seconds, epoch = 0, 0.0, 0.0
    named_trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    checkpoint_file = paths.checkpoint_dir / "customize-checkpoint.pt"
    first_step = 1
    if hp.checkpoint_steps > 0 and checkpoint_file.is_file():
        state = torch.load(checkpoint_file, map_location=device, weights_only=False)
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named_trainable[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, validation = state["history"], state["validation"]
        initial = validation[0]["validation_loss"]
        trained_tokens, train_seconds = state["trained_tokens"], state["train_seconds"]
        # Replay the batch order up to the checkpoint: same seed, same sequence of batches.
        for _ in range(state["step"] * hp.gradient_accumulation_steps):
            epoch, _batch = next(batches)
        first_step = state["step"] + 1
        _log(resumed_from_step=state["step"])
    for step in range(first_step, total_steps + 1):
        started = time.perf_counter()
        step_loss = 0.0
        for _ in range(hp.gradient_accumulation_steps):
            epoch, batch = next(batches)
            batch = {key: value.to(device) for key, value in batch.items()}
            with _autocast(device, hp):
                loss = model(**batch).loss / hp.gradient_accumulation_steps
            loss.backward()
            step_loss += float(loss.detach())
            trained_tokens += int(batch["attention_mask"].sum())
        torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - started
        history.append({"step": step, "epoch": epoch, "train_loss": step_loss})
        if step % hp.log_steps == 0 or step == total_steps:
            _log(
                step=step,
                epoch=round(epoch, 3),
                train_loss=step_loss,
                learning_rate=scheduler.get_last_lr()[0],
                tokens_per_second=trained_tokens / max(train_seconds, 1e-9),
            )
        if step % eval_steps == 0 or step == total_steps:
            loss_value = _validation_loss(model, validation_examples, hp, pad_id, device)
            validation.append({"step": step, "validation_loss": loss_value})
            _log(step=step, validation_loss=loss_value)
        if hp.checkpoint_steps > 0 and (step % hp.checkpoint_steps == 0 or step == total_steps):
            paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            partial = checkpoint_file.with_suffix(".partial")
            state = {
                "step": step,
                "trainable": {name: p.detach().cpu() for name, p in named_trainable.items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "validation": validation,
                "trained_tokens": trained_tokens,
                "train_seconds": train_seconds,
            }
            torch.save(state, partial)
            # A spot interruption mid-write must not leave a corrupt checkpoint behind.
            os.replace(partial, checkpoint_file)

    if hp.method == "lora":
        model = model.merge_and_unload()
    model = model.to("cpu")
    save_dtype = (
        hp.save_dtype if hp.save_dtype != "auto" else ("bfloat16" if hp.bf16 else "float32")
    )
    model = model.to(getattr(torch, save_dtype))
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(paths.model_dir)
    tokenizer.save_pretrained(paths.model_dir)

    tokens_per_second = trained_tokens / max(train_seconds, 1e-9)
    metrics: dict[str, Any] = {
        "mode": hp.mode.value,
        "method": hp.method,
        "device": device.type,
        "hyperparameters": {**asdict(hp), "mode": hp.mode.value},
        "steps": total_steps,
        "epochs": epoch,
        "train_tokens": trained_tokens,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens_per_second,
        "initial_validation_loss": initial,
        "final_train_loss": history[-1]["train_loss"],
        "final_validation_loss": validation[-1]["validation_loss"],
        "history": history,
        "validation": validation,
    }
    paths.output_data_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = paths.output_data_dir / "metrics.json"
    metrics_file.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _log(
        tokens_per_second=tokens_per_second,
        train_tokens=trained_tokens,
        train_seconds=train_seconds,
    )
    return TrainingResult(model_dir=paths.model_dir, metrics_file=metrics_file, metrics=metrics)


def _parse_overrides(items: Sequence[str]) -> dict[str, str]:
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


def build_parser() -> argparse.ArgumentParser:
    """Command-line options; any other ``--name value`` pair is read as a hyperparameter."""
    parser = argparse.ArgumentParser(
        prog="customize train",
        # Hyperparameters pass through as unknown options: --mode must not abbreviate --model-dir.
        allow_abbrev=False,
        description="Run a customization training job (SageMaker's /opt/ml layout by default).",
    )
    parser.add_argument("--train-dir", type=Path, help="train channel (default $SM_CHANNEL_TRAIN)")
    parser.add_argument("--validation-dir", type=Path, help="validation channel")
    parser.add_argument(
        "--base-model-dir", type=Path, help="base model (default the 'model' channel)"
    )
    parser.add_argument(
        "--model-dir", type=Path, help="where the merged model goes (default $SM_MODEL_DIR)"
    )
    parser.add_argument("--output-data-dir", type=Path, help="where metrics.json goes")
    parser.add_argument("--hyperparameters", type=Path, help="hyperparameters.json to read")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a training job from the command line; return the process exit code."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # SageMaker starts a training image as `docker run <image> train`.
    if argv[:1] == ["train"]:
        argv = argv[1:]
    arguments, rest = parser.parse_known_args(argv)
    defaults = TrainingPaths()
    overrides = {
        key: value
        for key, value in {
            "train_dir": arguments.train_dir,
            "validation_dir": arguments.validation_dir,
            "base_model_dir": arguments.base_model_dir,
            "model_dir": arguments.model_dir,
            "output_data_dir": arguments.output_data_dir,
            "hyperparameters_file": arguments.hyperparameters,
        }.items()
        if value is not None
    }
    paths = replace(defaults, **overrides)
    raw: dict[str, Any] = {}
    if paths.hyperparameters_file.is_file():
        raw.update(json.loads(paths.hyperparameters_file.read_text(encoding="utf-8")))
    elif arguments.hyperparameters is not None:
        parser.error(f"{arguments.hyperparameters}: no such file")
    try:
        raw.update(_parse_overrides(rest))
        hp = resolve_hyperparameters(raw)
    except ValueError as error:
        parser.error(str(error))
    result = train(hp, paths)
    print(
        json.dumps(
            {
                key: result.metrics[key]
                for key in (
                    "mode",
                    "steps",
                    "tokens_per_second",
                    "initial_validation_loss",
                    "final_validation_loss",
                )
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
