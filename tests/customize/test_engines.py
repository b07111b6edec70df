"""Evaluation engines: vLLM configured as the chat endpoint runs it; metrics stay engine-free.

vLLM cannot run on the CPU test machine, so a scripted ``vllm`` module stands in for it: the
point is what our engine asks of vLLM (tensor parallel, dtype, LoRA) and how it turns vLLM's
prompt log-probabilities into the perplexity inputs.
"""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from customize.engines import EngineSettings, VllmEngine, is_adapter, open_engine
from customize.evaluate import perplexity_from_nll


class _Logprob:
    def __init__(self, logprob: float) -> None:
        self.logprob = logprob


class _FakeLLM:
    created: list[dict[str, Any]] = []  # noqa: RUF012 - the record the test reads

    def __init__(self, **kwargs: Any) -> None:
        _FakeLLM.created.append(kwargs)
        self.calls: list[tuple[Any, Any, Any]] = []

    def get_tokenizer(self) -> Any:
        class _Tokenizer:
            eos_token_id = 0

            def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
                return {"input_ids": [len(word) for word in text.split()]}

        return _Tokenizer()

    def generate(self, prompts: list[Any], params: Any, lora_request: Any, use_tqdm: bool) -> Any:
        self.calls.append((prompts, params, lora_request))
        if params.kwargs.get("prompt_logprobs") == 0:
            # Every predicted prompt token at log-probability ln(1/2).
            return [
                types.SimpleNamespace(
                    prompt_logprobs=[None]
                    + [{token: _Logprob(math.log(0.5))} for token in p["prompt_token_ids"][1:]]
                )
                for p in prompts
            ]
        return [
            types.SimpleNamespace(outputs=[types.SimpleNamespace(text=f" echo {p} ")])
            for p in prompts
        ]


class _Params:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> type[_FakeLLM]:
    _FakeLLM.created = []
    vllm = types.ModuleType("vllm")
    vllm.LLM = _FakeLLM  # type: ignore[attr-defined]
    vllm.SamplingParams = _Params  # type: ignore[attr-defined]
    vllm.TokensPrompt = dict  # type: ignore[attr-defined]
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda name, number, path: (name, number, path)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    return _FakeLLM


def test_vllm_runs_merged_weights_at_the_endpoints_degree(
    fake_vllm: type[_FakeLLM], tmp_path: Path
) -> None:
    settings = EngineSettings(device="cuda", tensor_parallel_degree=4, max_model_len=2048)
    engine = open_engine("vllm", tmp_path, settings)
    assert isinstance(engine, VllmEngine)
    [created] = fake_vllm.created
    assert created["model"] == str(tmp_path)
    assert (created["tensor_parallel_size"], created["dtype"]) == (4, "bfloat16")
    assert created["max_model_len"] == 2048
    assert "enable_lora" not in created
    assert engine.generate(["a b"], max_new_tokens=7) == ["echo a b"]
    [(_, params, lora)] = engine.llm.calls
    assert params.kwargs == {"temperature": 0.0, "max_tokens": 7}
    assert lora is None
    # Perplexity from prompt log-probabilities: each predicted token at 1/2 -> perplexity 2.
    total, tokens = engine.negative_log_likelihood(["aa bbb c", "dd"], max_seq_len=512)
    assert tokens == (4 - 1) + (2 - 1)  # words + EOS, minus the unpredicted first token
    assert perplexity_from_nll(total, tokens) == pytest.approx(2.0)


def test_vllm_applies_a_lora_adapter_over_the_base(
    fake_vllm: type[_FakeLLM], tmp_path: Path
) -> None:
    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
    assert is_adapter(adapter)
    engine = VllmEngine(adapter, EngineSettings(tensor_parallel_degree=2), base)
    [created] = fake_vllm.created
    assert created["model"] == str(base)
    assert (created["enable_lora"], created["max_lora_rank"]) == (True, 16)
    engine.generate(["x"], max_new_tokens=1)
    assert engine.llm.calls[0][2] == ("customized", 1, str(adapter))
    with pytest.raises(ValueError, match="needs --base-model"):
        open_engine("vllm", adapter, EngineSettings())


def test_unknown_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine: must be one of transformers, vllm"):
        open_engine("tgi", tmp_path, EngineSettings())
