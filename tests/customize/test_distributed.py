"""The sharded path: two torchrun workers on the CPU (gloo), FSDP2, checkpoint and resume, save."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from customize.data import write_jsonl
from customize.hyperparameters import resolve_hyperparameters
from customize.train import _gpus_to_launch

RECORDS = [
    {
        "prompt": f"Summarize: {name} moved the meeting to {day}.\nSummary:",
        "completion": f" Decision: meeting on {day}.",
    }
    for name in ("Anna", "Ben", "Chloe", "David")
    for day in ("Monday", "Tuesday", "Friday")
]


def _torchrun(tmp_path: Path, base: Path, *hyperparameters: str) -> str:
    env = {
        **os.environ,
        "CUSTOMIZE_CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "customize.train",
        "--train-dir",
        str(tmp_path / "train"),
        "--validation-dir",
        str(tmp_path / "validation"),
        "--base-model-dir",
        str(base),
        "--model-dir",
        str(tmp_path / "model"),
        "--output-data-dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        "--batch_size",
        "2",
        "--learning_rate",
        "0.01",
        "--lora_rank",
        "4",
        "--checkpoint_steps",
        "2",
        "--gradient_checkpointing",
        *hyperparameters,
    ]
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_workers_shard_checkpoint_resume_and_save_merged(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    write_jsonl(tmp_path / "train" / "train.jsonl", RECORDS)
    write_jsonl(tmp_path / "validation" / "validation.jsonl", RECORDS[:4])
    first = _torchrun(tmp_path, tiny_model_dir, "--max_steps", "2")
    # Rank 0 alone logs: one line per step, not two.
    assert first.count("step=2; epoch") == 1
    assert "world_size=2;" in first
    meta = tmp_path / "checkpoints" / "customize-checkpoint-meta.pt"
    assert meta.is_file()
    assert [p.name for p in (tmp_path / "checkpoints").glob("step-*")] == ["step-00000002"]

    # A spot restart with a higher step budget resumes from step 2 on both ranks.
    resumed = _torchrun(tmp_path, tiny_model_dir, "--max_steps", "4")
    assert "resumed_from_step=2;" in resumed
    assert "step=1; epoch" not in resumed
    assert "step=4; epoch" in resumed
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert [entry["step"] for entry in metrics["history"]] == [1, 2, 3, 4]
    # Both ranks' tokens count: 2 ranks x batch 2 per step.
    assert metrics["train_tokens"] > 4 * 2 * 2 * 5
    assert metrics["final_validation_loss"] < metrics["initial_validation_loss"]

    # Rank 0 rebuilt the model from the base and the gathered LoRA weights, then merged it.
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model" / "model.safetensors"))
    assert not any("lora" in name for name in saved)
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    changed = [name for name in base if "q_proj" in name and not saved[name].equal(base[name])]
    assert changed, "the merged q_proj weights equal the base: LoRA weights were lost"


def test_one_worker_per_gpu_only_where_there_are_several(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert _gpus_to_launch(resolve_hyperparameters({})) == 4
    assert _gpus_to_launch(resolve_hyperparameters({"distributed": "off"})) == 0
    # QLoRA runs on one GPU; the CPU never launches workers.
    qlora = {"quantization": "4bit", "save_format": "adapter"}
    assert _gpus_to_launch(resolve_hyperparameters(qlora)) == 0
    assert _gpus_to_launch(resolve_hyperparameters({"device": "cpu"})) == 0
    monkeypatch.setenv("LOCAL_RANK", "0")  # already a torchrun worker
    assert _gpus_to_launch(resolve_hyperparameters({})) == 0
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert _gpus_to_launch(resolve_hyperparameters({})) == 0
