"""Training entrypoint, the same on SageMaker and locally: fine-tuning or continued pre-training.

The loop is our own rather than ``transformers.Trainer``: it is short, and it keeps the three
things this job is about in plain sight: loss on completion tokens only, the metric lines
that SageMaker metric definitions parse, and a merged safetensors model the chat backend
serves as is. Hyperparameters are in :mod:`customize.hyperparameters`; several GPUs are
sharded with FSDP by :mod:`customize.distributed`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbot_contracts.training import METRIC_DEFINITIONS
from customize import distributed
from customize.data import Mode, read_jsonl
from customize.hyperparameters import (
    MODE_DEFAULTS,
    Hyperparameters,
    parse_overrides,
    resolve_hyperparameters,
)

if TYPE_CHECKING:
    import torch

    from customize.distributed import DistributedContext

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
    examples: Sequence[_Example],
    hp: Hyperparameters,
    pad_id: int,
    generator: torch.Generator,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[float, dict[str, torch.Tensor]]]:
    """Shuffled batches forever; with several processes, rank r takes the r-th of each group."""
    import torch

    per_epoch = math.ceil(len(examples) / (hp.batch_size * world_size))
    epoch = 0
    while True:
        # Every rank draws the same permutation (same seed) and takes its own slice of it.
        order = torch.randperm(len(examples), generator=generator).tolist()
        for index in range(per_epoch):
            first = (index * world_size + rank) * hp.batch_size
            if world_size == 1:
                chosen = order[first : first + hp.batch_size]
            else:
                # Wrap around so that every rank gets a full batch and the steps stay in step.
                chosen = [order[i % len(order)] for i in range(first, first + hp.batch_size)]
            yield epoch + (index + 1) / per_epoch, _collate([examples[i] for i in chosen], pad_id)
        epoch += 1


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


def _log(context: DistributedContext | None = None, **values: Any) -> None:
    if context is not None and not context.is_main:
        return
    parts = [
        f"{key}={value:.6g};" if isinstance(value, float) else f"{key}={value};"
        for key, value in values.items()
    ]
    print(" ".join(parts), flush=True)


def _lora_config(model: Any, hp: Hyperparameters) -> Any:
    from peft import LoraConfig

    layers = None
    if hp.lora_layers > 0:
        total = int(model.config.num_hidden_layers)
        layers = list(range(max(total - hp.lora_layers, 0), total))
    return LoraConfig(
        r=hp.lora_rank,
        lora_alpha=hp.lora_alpha,
        lora_dropout=hp.lora_dropout,
        target_modules=[name.strip() for name in hp.lora_target_modules.split(",") if name.strip()],
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )


def _attach_lora(model: Any, hp: Hyperparameters) -> Any:
    from peft import get_peft_model

    return get_peft_model(model, _lora_config(model, hp))


def _load_base(base: Path, hp: Hyperparameters, context: DistributedContext) -> Any:
    """The base model in its training dtype (or 4-bit), checkpointing on, LoRA attached."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": getattr(torch, hp.load_dtype)}
    if hp.quantization == "4bit":
        if context.sharded or context.device.type != "cuda":
            raise ValueError("quantization: 4bit (QLoRA) runs on one GPU; set distributed=off")
        try:
            import bitsandbytes  # noqa: F401  # the quantized kernels; absent: a clear error
            from transformers import BitsAndBytesConfig
        except ImportError as error:
            raise RuntimeError(
                "quantization: 4bit needs bitsandbytes (requirements/customize-gpu.txt)"
            ) from error
        quantization_config: Any = BitsAndBytesConfig  # untyped in transformers
        kwargs["quantization_config"] = quantization_config(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
        kwargs["device_map"] = {"": context.device.index or 0}
    model: Any = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    checkpointing = {"use_reentrant": False}
    if hp.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        prepare: Any = prepare_model_for_kbit_training  # untyped in peft
        model = prepare(
            model,
            use_gradient_checkpointing=hp.gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing,
        )
    elif hp.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
    if hp.gradient_checkpointing:
        model.config.use_cache = False
    if hp.method == "lora":
        model = _attach_lora(model, hp)
    return model


def _load_and_place(base: Path, hp: Hyperparameters, context: DistributedContext) -> Any:
    """The model ready to train: on this process's device, or this rank's FSDP shard of it."""
    import torch

    if context.sharded:
        mesh = distributed.device_mesh(context)
        dtype = getattr(torch, hp.load_dtype)
        return distributed.in_turn(
            context,
            lambda: distributed.shard_model(_load_base(base, hp, context), mesh, dtype),
        )
    model = _load_base(base, hp, context)
    if hp.quantization == "4bit":
        return model  # placed by device_map at load; a quantized model cannot be moved
    return model.to(context.device)


def _save_model(
    model: Any,
    tokenizer: Any,
    base: Path,
    hp: Hyperparameters,
    paths: TrainingPaths,
    context: DistributedContext,
) -> None:
    """Merged weights (or the LoRA adapter) in ``model_dir``, written by rank 0 only."""
    import torch

    save_dtype = getattr(
        torch,
        hp.save_dtype if hp.save_dtype != "auto" else ("bfloat16" if hp.bf16 else "float32"),
    )
    if context.sharded:
        # Gather only what was trained, then rebuild on rank 0's CPU from the base weights.
        trained = distributed.gather_trainable_state(model)
        if not context.is_main:
            return
        paths.model_dir.mkdir(parents=True, exist_ok=True)
        if hp.save_format == "adapter":
            model.save_pretrained(paths.model_dir, state_dict=trained)
            tokenizer.save_pretrained(paths.model_dir)
            return
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, dtype=save_dtype)
        if hp.method == "lora":
            model = _attach_lora(model, hp)
        missing = set(trained) - set(model.state_dict())
        if missing:
            raise RuntimeError(f"trained weights unknown to the rebuilt model: {sorted(missing)}")
        model.load_state_dict(trained, strict=False)
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    if hp.save_format == "adapter":
        # The serving engine applies the adapter to the base weights (vLLM LoRA).
        model.save_pretrained(paths.model_dir)
    else:
        if hp.method == "lora":
            model = model.merge_and_unload()
        model = model.to("cpu").to(save_dtype)
        model.save_pretrained(paths.model_dir)
    tokenizer.save_pretrained(paths.model_dir)


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
        The model directory (``model.safetensors``, ``config.json``, tokenizer; or the LoRA
        adapter), and ``metrics.json`` in the output data directory with the loss history,
        the final validation loss, the training throughput in tokens per second, the median
        step time and, on CUDA, the peak GPU memory of rank 0.
    """
    import torch
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup

    threads = hp.num_threads or int(os.environ.get("CUSTOMIZE_NUM_THREADS", "0"))
    if threads > 0:
        torch.set_num_threads(threads)
    context = distributed.setup(hp.device)
    device = context.device
    torch.manual_seed(hp.seed)
    base = Path(hp.base_model) if hp.base_model else paths.base_model_dir
    tokenizer = AutoTokenizer.from_pretrained(base)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    model = _load_and_place(base, hp, context)
    model.train()

    train_examples = _encode(_read_channel(paths.train_dir), tokenizer, hp)
    validation_examples = _encode(_read_channel(paths.validation_dir), tokenizer, hp)
    batches_per_epoch = math.ceil(len(train_examples) / (hp.batch_size * context.world_size))
    updates_per_epoch = math.ceil(batches_per_epoch / hp.gradient_accumulation_steps)
    total_steps = (
        hp.max_steps if hp.max_steps > 0 else max(1, math.ceil(updates_per_epoch * hp.epochs))
    )
    eval_steps = hp.eval_steps if hp.eval_steps > 0 else updates_per_epoch
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay)
    linear_schedule: Any = get_linear_schedule_with_warmup  # untyped in transformers
    scheduler = linear_schedule(optimizer, round(total_steps * hp.warmup_ratio), total_steps)
    _log(
        context,
        mode=hp.mode.value,
        method=hp.method,
        device=device.type,
        world_size=context.world_size,
        weights_dtype=hp.load_dtype,
        quantization=hp.quantization,
        gradient_checkpointing=hp.gradient_checkpointing,
        train_examples=len(train_examples),
        validation_examples=len(validation_examples),
        total_steps=total_steps,
        trainable_parameters=sum(parameter.numel() for parameter in trainable),
    )

    history: list[dict[str, float]] = []
    validation: list[dict[str, float]] = []
    initial = _validation_loss(model, validation_examples, hp, pad_id, device)
    validation.append({"step": 0, "validation_loss": initial})
    _log(context, step=0, validation_loss=initial)

    generator = torch.Generator().manual_seed(hp.seed)
    batches = _batches(train_examples, hp, pad_id, generator, context.rank, context.world_size)
    trained_tokens, train_seconds, epoch = 0, 0.0, 0.0
    named_trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    checkpoint_file = paths.checkpoint_dir / "customize-checkpoint.pt"
    first_step = 1
    state: dict[str, Any] | None = None
    if hp.checkpoint_steps > 0 and context.sharded:
        state = distributed.load_sharded_checkpoint(paths.checkpoint_dir, model, optimizer)
    elif hp.checkpoint_steps > 0 and checkpoint_file.is_file():
        state = torch.load(checkpoint_file, map_location=device, weights_only=False)
        with torch.no_grad():
            for name, value in state["trainable"].items():
                named_trainable[name].copy_(value)
        optimizer.load_state_dict(state["optimizer"])
    if state is not None:
        scheduler.load_state_dict(state["scheduler"])
        history, validation = state["history"], state["validation"]
        initial = validation[0]["validation_loss"]
        trained_tokens, train_seconds = state["trained_tokens"], state["train_seconds"]
        # Replay the batch order up to the checkpoint: same seed, same sequence of batches.
        for _ in range(state["step"] * hp.gradient_accumulation_steps):
            epoch, _batch = next(batches)
        first_step = state["step"] + 1
        _log(context, resumed_from_step=state["step"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(first_step, total_steps + 1):
        started = time.perf_counter()
        step_loss, step_tokens = 0.0, 0
        for _ in range(hp.gradient_accumulation_steps):
            epoch, batch = next(batches)
            # Counted on the host before the copy: no device round trip per micro-batch.
            step_tokens += int(batch["attention_mask"].sum())
            batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
            with _autocast(device, hp):
                loss = model(**batch).loss / hp.gradient_accumulation_steps
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(trainable, hp.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_seconds = time.perf_counter() - started
        if context.sharded:
            loss_sum, step_tokens_sum = distributed.all_reduce_sum(
                [step_loss, step_tokens], context
            )
            step_loss, step_tokens = loss_sum / context.world_size, int(step_tokens_sum)
        trained_tokens += step_tokens
        train_seconds += step_seconds
        history.append(
            {"step": step, "epoch": epoch, "train_loss": step_loss, "step_seconds": step_seconds}
        )
        if step % hp.log_steps == 0 or step == total_steps:
            _log(
                context,
                step=step,
                epoch=round(epoch, 3),
                train_loss=step_loss,
                learning_rate=scheduler.get_last_lr()[0],
                step_seconds=step_seconds,
                tokens_per_second=trained_tokens / max(train_seconds, 1e-9),
            )
        if step % eval_steps == 0 or step == total_steps:
            loss_value = _validation_loss(model, validation_examples, hp, pad_id, device)
            validation.append({"step": step, "validation_loss": loss_value})
            _log(context, step=step, validation_loss=loss_value)
        if hp.checkpoint_steps > 0 and (step % hp.checkpoint_steps == 0 or step == total_steps):
            paths.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            loop_state = {
                "scheduler": scheduler.state_dict(),
                "history": history,
                "validation": validation,
                "trained_tokens": trained_tokens,
                "train_seconds": train_seconds,
            }
            if context.sharded:
                distributed.save_sharded_checkpoint(
                    paths.checkpoint_dir, step, model, optimizer, loop_state, context
                )
            else:
                partial = checkpoint_file.with_suffix(".partial")
                trainable_state = {n: p.detach().cpu() for n, p in named_trainable.items()}
                torch.save(
                    {
                        "step": step,
                        "trainable": trainable_state,
                        "optimizer": optimizer.state_dict(),
                        **loop_state,
                    },
                    partial,
                )
                # A spot interruption mid-write must not leave a corrupt checkpoint behind.
                os.replace(partial, checkpoint_file)

    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    _save_model(model, tokenizer, base, hp, paths, context)
    step_times = sorted(item["step_seconds"] for item in history if "step_seconds" in item)
    tokens_per_second = trained_tokens / max(train_seconds, 1e-9)
    metrics: dict[str, Any] = {
        "mode": hp.mode.value,
        "method": hp.method,
        "device": device.type,
        "world_size": context.world_size,
        "hyperparameters": {**asdict(hp), "mode": hp.mode.value},
        "steps": total_steps,
        "epochs": epoch,
        "train_tokens": trained_tokens,
        "train_seconds": train_seconds,
        "tokens_per_second": tokens_per_second,
        "median_step_seconds": step_times[len(step_times) // 2] if step_times else None,
        "peak_gpu_memory_gib": peak_gib,
        "initial_validation_loss": initial,
        "final_train_loss": history[-1]["train_loss"],
        "final_validation_loss": validation[-1]["validation_loss"],
        "history": history,
        "validation": validation,
    }
    metrics_file = paths.output_data_dir / "metrics.json"
    if context.is_main:
        paths.output_data_dir.mkdir(parents=True, exist_ok=True)
        metrics_file.write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    _log(
        context,
        tokens_per_second=tokens_per_second,
        train_tokens=trained_tokens,
        train_seconds=train_seconds,
    )
    # No collective after the save: rank 0 may spend minutes merging and writing 41 GB.
    distributed.teardown(context)
    return TrainingResult(model_dir=paths.model_dir, metrics_file=metrics_file, metrics=metrics)


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


def _gpus_to_launch(hp: Hyperparameters) -> int:
    """GPUs to start one worker each on, or 0 to train in this process."""
    if hp.distributed != "auto" or hp.quantization != "none" or hp.device == "cpu":
        return 0
    if "LOCAL_RANK" in os.environ:  # already a torchrun worker
        return 0
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return count if count > 1 else 0


def main(
    argv: Sequence[str] | None = None, *, worker: Sequence[str] = ("-m", "customize.train")
) -> int:
    """Run a training job from the command line; return the process exit code.

    On an instance with several GPUs (and ``distributed`` ``auto``), the job starts one
    worker per GPU under torchrun, each running ``python WORKER ARGV``, and waits for them.
    """
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
        raw.update(parse_overrides(rest))
        hp = resolve_hyperparameters(raw)
    except ValueError as error:
        parser.error(str(error))
    gpus = _gpus_to_launch(hp)
    if gpus:
        return distributed.launch_per_gpu(argv, gpus, worker)
    result = train(hp, paths)
    if int(os.environ.get("RANK", "0")) == 0:
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
