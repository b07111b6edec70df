"""Training entrypoint: hyperparameters, completion-only loss, a tiny run, the saved model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chatbot_contracts.training import METRIC_DEFINITIONS
from customize.data import Mode, write_jsonl
from customize.hyperparameters import (
    MODE_DEFAULTS,
    Hyperparameters,
    parse_overrides,
    resolve_hyperparameters,
)
from customize.train import TrainingPaths, _encode, main, train

# One fixed answer style, so that a two-layer model can learn it in a few steps.
FT_RECORDS = [
    {
        "prompt": f"Summarize: {name} moved the meeting to {day}.\nSummary:",
        "completion": f" Decision: meeting on {day}.",
    }
    for name in ("Anna", "Ben", "Chloe", "David")
    for day in ("Monday", "Tuesday", "Friday")
]
CPT_RECORDS = [
    {"input": f"The chat endpoint answers ping with 200 when ready, step {index}."}
    for index in range(12)
]


def test_mode_defaults_follow_the_customization_guidance() -> None:
    ft = resolve_hyperparameters({})
    cpt = resolve_hyperparameters({"mode": "continued-pre-training"})
    assert (ft.mode, ft.method) == (Mode.FINE_TUNING, "lora")
    assert cpt.method == "full"
    # Continued pre-training: more epochs at a lower learning rate.
    assert cpt.epochs > ft.epochs
    assert cpt.learning_rate < ft.learning_rate
    assert ft.learning_rate == MODE_DEFAULTS[Mode.FINE_TUNING]["learning_rate"]


def test_sagemaker_string_values_are_coerced() -> None:
    # SageMaker writes every value as a string; the Python SDK JSON-encodes strings too.
    hp = resolve_hyperparameters(
        {
            "epochs": "2",
            "learning-rate": "0.001",
            "bf16": "true",
            "lora_rank": "4",
            "method": '"full"',
            "sagemaker_program": "x",
        }
    )
    assert (hp.epochs, hp.learning_rate, hp.bf16, hp.lora_rank, hp.method) == (
        2.0,
        0.001,
        True,
        4,
        "full",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learning_rat": "1"}, "unknown hyperparameter"),
        ({"batch_size": "four"}, "batch_size"),
        ({"batch_size": "0"}, "batch_size"),
        ({"method": "qlora"}, "method"),
        ({"bf16": "maybe"}, "bf16"),
        ({"mode": "pretraining"}, "mode"),
        ({"quantization": "8bit"}, "quantization"),
        ({"quantization": "4bit", "method": "full"}, "quantization: 4bit trains LoRA"),
        ({"quantization": "4bit"}, "save_format: quantization=4bit saves the LoRA adapter"),
        ({"save_format": "adapter", "mode": "continued-pre-training"}, "adapter needs method"),
        ({"distributed": "deepspeed"}, "distributed"),
        ({"weights_dtype": "int8"}, "weights_dtype"),
    ],
)
def test_bad_hyperparameters_name_the_field(raw: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_hyperparameters(raw)


def test_large_model_settings_hold_the_frozen_base_in_bf16_only_for_lora() -> None:
    # LoRA in bf16: the frozen base in bfloat16 (41.2 GB for 20.6 B instead of 82.4 GB).
    assert resolve_hyperparameters({"bf16": "true"}).load_dtype == "bfloat16"
    # Full training keeps float32 master weights; without bf16 everything stays float32.
    full = {"bf16": "true", "method": "full"}
    assert resolve_hyperparameters(full).load_dtype == "float32"
    assert resolve_hyperparameters({}).load_dtype == "float32"
    assert resolve_hyperparameters({"weights_dtype": "float16"}).load_dtype == "float16"
    hp = resolve_hyperparameters(
        {"gradient_checkpointing": "true", "quantization": "4bit", "save_format": "adapter"}
    )
    assert (hp.gradient_checkpointing, hp.quantization, hp.save_format) == (True, "4bit", "adapter")


def test_loss_only_on_completion_tokens(tokenizer: Any) -> None:
    hp = Hyperparameters()
    [example] = _encode([FT_RECORDS[0]], tokenizer, hp)
    prompt_length = len(tokenizer(FT_RECORDS[0]["prompt"], add_special_tokens=False)["input_ids"])
    assert example.labels[:prompt_length] == [-100] * prompt_length
    assert example.labels[prompt_length:] == example.input_ids[prompt_length:]
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_continued_pre_training_learns_every_token(tokenizer: Any) -> None:
    [example] = _encode(
        CPT_RECORDS[:1], tokenizer, Hyperparameters(mode=Mode.CONTINUED_PRE_TRAINING)
    )
    assert example.labels == example.input_ids


def _sagemaker_layout(
    root: Path, records: list[dict[str, str]], hyperparameters: dict[str, str]
) -> TrainingPaths:
    paths = TrainingPaths(
        train_dir=root / "input/data/train",
        validation_dir=root / "input/data/validation",
        base_model_dir=root / "input/data/model",
        model_dir=root / "model",
        output_data_dir=root / "output/data",
        hyperparameters_file=root / "input/config/hyperparameters.json",
    )
    write_jsonl(paths.train_dir / "train.jsonl", records)
    write_jsonl(paths.validation_dir / "validation.jsonl", records[:4])
    paths.hyperparameters_file.parent.mkdir(parents=True)
    paths.hyperparameters_file.write_text(json.dumps(hyperparameters), encoding="utf-8")
    return paths


@pytest.fixture(scope="module")
def fine_tuned(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> tuple[TrainingPaths, str]:
    """A LoRA fine-tuning run of the entrypoint through SageMaker's environment and files."""
    root = tmp_path_factory.mktemp("opt-ml")
    paths = _sagemaker_layout(
        root,
        FT_RECORDS,
        {
            "max_steps": "8",
            "learning_rate": "0.01",
            "batch_size": "4",
            "lora_rank": "4",
            "eval_steps": "4",
            "seed": "1",
        },
    )
    capture = pytest.MonkeyPatch()
    for variable, value in {
        "SM_CHANNEL_TRAIN": paths.train_dir,
        "SM_CHANNEL_VALIDATION": paths.validation_dir,
        "SM_MODEL_DIR": paths.model_dir,
        "SM_OUTPUT_DATA_DIR": paths.output_data_dir,
        "SM_HPS_FILE": paths.hyperparameters_file,
    }.items():
        capture.setenv(variable, str(value))
    import contextlib
    import io

    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            assert main(["--base-model-dir", str(tiny_model_dir)]) == 0
    finally:
        capture.undo()
    return paths, stdout.getvalue()


@pytest.mark.timeout(120)
def test_fine_tuning_loss_decreases(fine_tuned: tuple[TrainingPaths, str]) -> None:
    paths, _ = fine_tuned
    metrics = json.loads((paths.output_data_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["mode"] == "fine-tuning"
    assert metrics["method"] == "lora"
    assert metrics["steps"] == 8
    assert metrics["final_validation_loss"] < metrics["initial_validation_loss"]
    assert metrics["history"][-1]["train_loss"] < metrics["history"][0]["train_loss"]
    assert [entry["step"] for entry in metrics["validation"]] == [0, 4, 8]
    assert metrics["tokens_per_second"] > 0
    assert metrics["train_tokens"] > 0


def test_metric_lines_parse_with_the_sagemaker_regexes(
    fine_tuned: tuple[TrainingPaths, str],
) -> None:
    _, log = fine_tuned
    found = {
        definition["Name"]: re.findall(definition["Regex"], log)
        for definition in METRIC_DEFINITIONS
    }
    assert len(found["train_loss"]) == 8
    assert len(found["validation_loss"]) == 3
    assert all(float(value) > 0 for values in found.values() for value in values)
    summary = json.loads(log.strip().splitlines()[-1])
    assert summary["final_validation_loss"] < summary["initial_validation_loss"]


def test_saved_model_is_merged_safetensors_that_transformers_loads(
    fine_tuned: tuple[TrainingPaths, str], tiny_model_dir: Path
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths, _ = fine_tuned
    saved = sorted(path.name for path in paths.model_dir.iterdir())
    assert "model.safetensors" in saved
    assert "config.json" in saved
    assert "tokenizer.json" in saved
    assert not [name for name in saved if "adapter" in name]  # merged, no peft files to serve
    tensors = load_file(paths.model_dir / "model.safetensors")
    assert not [name for name in tensors if "lora" in name]
    base = load_file(tiny_model_dir / "model.safetensors")
    changed = [
        name for name in base if "q_proj" in name and not torch.equal(base[name], tensors[name])
    ]
    assert changed, "LoRA deltas were not merged into the weights"

    model: Any = AutoModelForCausalLM.from_pretrained(paths.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(paths.model_dir)
    prompt = tokenizer(FT_RECORDS[0]["prompt"], return_tensors="pt", add_special_tokens=False)
    output = model.generate(
        **prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    assert output.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.timeout(120)
def test_continued_pre_training_full_run_loss_decreases(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    paths = _sagemaker_layout(tmp_path, CPT_RECORDS, {})
    hp = resolve_hyperparameters(
        {
            "mode": "continued-pre-training",
            "max_steps": "6",
            "learning_rate": "0.005",
            "batch_size": "4",
            "base_model": str(tiny_model_dir),
        }
    )
    result = train(hp, paths)
    assert result.metrics["method"] == "full"
    assert result.metrics["final_validation_loss"] < result.metrics["initial_validation_loss"]
    assert (result.model_dir / "model.safetensors").is_file()


def test_missing_channel_is_reported(tmp_path: Path, tiny_model_dir: Path) -> None:
    paths = TrainingPaths(
        train_dir=tmp_path / "nowhere",
        validation_dir=tmp_path / "nowhere",
        model_dir=tmp_path / "model",
        output_data_dir=tmp_path / "out",
    )
    with pytest.raises(FileNotFoundError, match=r"no \.jsonl files"):
        train(resolve_hyperparameters({"base_model": str(tiny_model_dir)}), paths)


@pytest.mark.timeout(180)
def test_interrupted_run_resumes_from_its_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a spot interruption looks like: the first job stops after 4 of 6 steps (its
    # max_steps), the restarted one finds the checkpoint and goes on from step 5.
    write_jsonl(tmp_path / "train" / "train.jsonl", FT_RECORDS)
    write_jsonl(tmp_path / "validation" / "validation.jsonl", FT_RECORDS[:4])
    paths = TrainingPaths(
        train_dir=tmp_path / "train",
        validation_dir=tmp_path / "validation",
        model_dir=tmp_path / "model",
        output_data_dir=tmp_path / "out",
        checkpoint_dir=tmp_path / "checkpoints",
    )
    common = {
        "learning_rate": "0.01",
        "batch_size": "4",
        "checkpoint_steps": "2",
        "base_model": str(tiny_model_dir),
    }
    first = train(resolve_hyperparameters({**common, "max_steps": "4"}), paths)
    assert (paths.checkpoint_dir / "customize-checkpoint.pt").is_file()
    assert "resumed_from_step" not in capsys.readouterr().out
    resumed = train(resolve_hyperparameters({**common, "max_steps": "6"}), paths)
    log = capsys.readouterr().out
    assert "resumed_from_step=4;" in log
    # Only steps 5 and 6 were trained again.
    assert "step=1; epoch" not in log
    assert "step=6; epoch" in log
    assert [entry["step"] for entry in resumed.metrics["history"]] == [1, 2, 3, 4, 5, 6]
    assert resumed.metrics["history"][:4] == first.metrics["history"]
    assert resumed.metrics["initial_validation_loss"] == first.metrics["initial_validation_loss"]
    assert resumed.metrics["final_validation_loss"] < first.metrics["initial_validation_loss"]


def test_command_line_hyperparameters_are_not_taken_for_path_options() -> None:
    from customize.train import build_parser

    arguments, rest = build_parser().parse_known_args(
        ["--mode", "continued-pre-training", "--model-dir", "/tmp/m", "--bf16", "--lora_rank", "4"]
    )
    assert arguments.model_dir == Path("/tmp/m")
    hp = resolve_hyperparameters(parse_overrides(rest))
    assert (hp.mode, hp.bf16, hp.lora_rank) == (Mode.CONTINUED_PRE_TRAINING, True, 4)
