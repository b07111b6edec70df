"""The local base model: the container's GGUF conversion, reused and cached."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from customize.models import ensure_base_model


def test_base_model_is_a_plain_safetensors_llama(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "llama"
    assert "quantization_config" not in config
    assert (smollm2_dir / "model.safetensors").stat().st_size > 100_000_000
    assert (smollm2_dir / "tokenizer.json").is_file()


def test_ensure_base_model_reuses_the_cache(smollm2_dir: Path) -> None:
    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert ensure_base_model(smollm2_dir.parent) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_base_model_answers_a_question(smollm2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model: Any = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    output = model.generate(
        **inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.eos_token_id
    )
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer
