"""A model saved by the training entrypoint is served as is by the chat container."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from customize.data import write_jsonl
from customize.train import TrainingPaths, resolve_hyperparameters, train
from tests.container.helpers import CHAT_PROPERTIES, start_launcher, stop_process, wait_for

RECORDS = [
    {"prompt": f"Summarize: Anna booked a table for {count}.\nSummary:", "completion": " Booked."}
    for count in range(8)
]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trained_model_is_served_by_the_chat_container(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    write_jsonl(tmp_path / "train" / "train.jsonl", RECORDS)
    write_jsonl(tmp_path / "validation" / "validation.jsonl", RECORDS[:2])
    paths = TrainingPaths(
        train_dir=tmp_path / "train",
        validation_dir=tmp_path / "validation",
        model_dir=tmp_path / "model",
        output_data_dir=tmp_path / "output",
    )
    hp = resolve_hyperparameters({"max_steps": "2", "base_model": str(tiny_model_dir)})
    model_dir = train(hp, paths).model_dir

    launched = start_launcher(
        tmp_path,
        CHAT_PROPERTIES,
        backend="vllm",
        OPTION_MODEL_ID=str(model_dir),
        OPTION_SERVED_MODEL_NAME=str(model_dir),
        OPTION_PROMPT_TEMPLATE="tokenizer",
        OPTION_STOP_WORDS="[]",
        OPTION_RETRIEVER="none",
    )
    try:
        wait_for(f"{launched.url}/ping", timeout_s=240)
        response = httpx.post(
            f"{launched.url}/invocations",
            json={
                "inputs": [{"role": "user", "content": "Summarize: Anna booked a table."}],
                "parameters": {"max_new_tokens": 4, "temperature": 0.0},
                "stream": False,
            },
            timeout=120,
        )
    finally:
        stop_process(launched.process)
    assert response.status_code == 200, launched.log_text()
    body = response.json()
    assert isinstance(body["generated_text"], str)
    assert body["details"]["generated_tokens"] >= 1
    assert body["details"]["prompt_tokens"] > 5
