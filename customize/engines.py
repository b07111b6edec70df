"""Generation engines for evaluation: vLLM as the chat endpoint runs it, or transformers.

The evaluation job on SageMaker generates with vLLM, tensor parallel over the GPUs the chat
endpoint uses, so a model the endpoint can serve is a model the job can evaluate (the 20.6 B
model in bfloat16 needs the endpoint's four GPUs). transformers runs the same interface on
the CPU for the local path and the tests. Both take merged weights or a LoRA adapter folder
(``adapter_config.json``) over the base model. Metrics are computed elsewhere, engine-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from chatbot_contracts.training import EVALUATION_ENGINES

__all__ = [
    "EngineSettings",
    "GenerationEngine",
    "TransformersEngine",
    "VllmEngine",
    "is_adapter",
    "open_engine",
]


@dataclass(frozen=True)
class EngineSettings:
    """How to run an engine: device, batch size, tensor-parallel degree, context length."""

    device: str = "cpu"
    batch_size: int = 8
    tensor_parallel_degree: int = 1
    max_model_len: int = 2048
    gpu_memory_utilization: float = 0.9


class GenerationEngine(Protocol):
    """What evaluation needs from an engine: greedy completions and token log-likelihoods."""

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
        """Greedy completions of raw prompts (no chat template)."""
        ...

    def negative_log_likelihood(
        self, texts: Sequence[str], *, max_seq_len: int
    ) -> tuple[float, int]:
        """Summed NLL of each text's tokens after the first (EOS appended), and their count."""
        ...

    def close(self) -> None:
        """Free the model (and the GPUs) before the next one loads."""
        ...


def is_adapter(model_dir: Path) -> bool:
    """True for a LoRA adapter folder (to be applied over the base model)."""
    return (model_dir / "adapter_config.json").is_file()


class TransformersEngine:
    """transformers ``generate`` in-process: float32 on the CPU, bfloat16 over all GPUs."""

    def __init__(
        self, model_dir: Path, settings: EngineSettings, base_model: Path | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.label = model_dir.name
        weights = base_model if is_adapter(model_dir) and base_model is not None else model_dir
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        on_cpu = settings.device == "cpu"
        kwargs: dict[str, Any] = {"dtype": torch.float32 if on_cpu else torch.bfloat16}
        if not on_cpu:
            kwargs["device_map"] = "auto"  # layers spread over every GPU of the instance
        model: Any = AutoModelForCausalLM.from_pretrained(weights, **kwargs)
        if is_adapter(model_dir):
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, model_dir)
        if on_cpu:
            model = model.to("cpu")
        model.eval()
        self.model = model
        self.input_device = "cpu" if on_cpu else str(next(model.parameters()).device)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
        """Greedy completions of raw prompts (no chat template)."""
        import torch

        self.tokenizer.padding_side = "left"
        outputs: list[str] = []
        size = self.settings.batch_size
        for start in tqdm(range(0, len(prompts), size), desc="generate", leave=False):
            batch = self.tokenizer(
                list(prompts[start : start + size]),
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(self.input_device)
            with torch.no_grad():
                generated = self.model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                )
            new_tokens = generated[:, batch["input_ids"].shape[1] :]
            outputs.extend(
                text.strip()
                for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            )
        return outputs

    def negative_log_likelihood(
        self, texts: Sequence[str], *, max_seq_len: int
    ) -> tuple[float, int]:
        """Summed NLL of each text's tokens after the first (EOS appended), and their count."""
        import torch

        tokenizer = self.tokenizer
        eos = tokenizer.eos_token_id
        total, tokens = 0.0, 0
        size = self.settings.batch_size
        for start in tqdm(range(0, len(texts), size), desc="perplexity", leave=False):
            encoded = [
                [*tokenizer(text, add_special_tokens=False)["input_ids"][: max_seq_len - 1], eos]
                for text in texts[start : start + size]
            ]
            width = max(len(ids) for ids in encoded)
            ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, sequence in enumerate(encoded):
                ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, : len(sequence)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            device = self.input_device
            with torch.no_grad():
                loss = self.model(
                    input_ids=ids.to(device),
                    attention_mask=mask.to(device),
                    labels=labels.to(device),
                ).loss
            count = int(mask[:, 1:].sum())
            total += float(loss) * count
            tokens += count
        return total, tokens

    def close(self) -> None:
        """Free the model (and the GPUs) before the next one loads."""
        import gc

        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VllmEngine:
    """vLLM's offline ``LLM``, configured as the chat endpoint runs it (tensor parallel, bf16)."""

    def __init__(
        self, model_dir: Path, settings: EngineSettings, base_model: Path | None = None
    ) -> None:
        from vllm import LLM  # in the jobs image (the inference image's vLLM DLC base)

        self.settings = settings
        self.lora: Any = None
        weights = model_dir
        kwargs: dict[str, Any] = {}
        if is_adapter(model_dir):
            if base_model is None:
                raise ValueError(f"{model_dir}: a LoRA adapter needs --base-model")
            import json

            from vllm.lora.request import LoRARequest

            rank = int(json.loads((model_dir / "adapter_config.json").read_text())["r"])
            weights = base_model
            kwargs = {"enable_lora": True, "max_lora_rank": max(rank, 8), "max_loras": 1}
            self.lora = LoRARequest("customized", 1, str(model_dir))
        self.llm = LLM(
            model=str(weights),
            tokenizer=str(model_dir if not is_adapter(model_dir) else weights),
            tensor_parallel_size=settings.tensor_parallel_degree,
            dtype="bfloat16",
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enforce_eager=True,  # one pass over a held-out set: CUDA graph capture costs more
            **kwargs,
        )

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
        """Greedy completions of raw prompts (no chat template)."""
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        results = self.llm.generate(list(prompts), params, lora_request=self.lora, use_tqdm=False)
        return [result.outputs[0].text.strip() for result in results]

    def negative_log_likelihood(
        self, texts: Sequence[str], *, max_seq_len: int
    ) -> tuple[float, int]:
        """Summed NLL of each text's tokens after the first (EOS appended), and their count."""
        from vllm import SamplingParams, TokensPrompt

        tokenizer = self.llm.get_tokenizer()
        prompts = [
            TokensPrompt(
                prompt_token_ids=[
                    *tokenizer(text, add_special_tokens=False)["input_ids"][: max_seq_len - 1],
                    tokenizer.eos_token_id,
                ]
            )
            for text in texts
        ]
        # prompt_logprobs=0 returns the log-probability of each actual prompt token.
        params = SamplingParams(max_tokens=1, prompt_logprobs=0)
        results = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        total, tokens = 0.0, 0
        for prompt, result in zip(prompts, results, strict=True):
            ids = prompt["prompt_token_ids"]
            for position, entry in enumerate(result.prompt_logprobs or []):
                if entry is None:  # the first token has no prediction
                    continue
                total -= float(entry[ids[position]].logprob)
                tokens += 1
        if not math.isfinite(total):
            raise ValueError("vLLM returned a non-finite log-probability")
        return total, tokens

    def close(self) -> None:
        """Free the model (and the GPUs) before the next one loads."""
        import gc

        import torch
        from vllm.distributed.parallel_state import (
            destroy_distributed_environment,
            destroy_model_parallel,
        )

        del self.llm
        destroy_model_parallel()
        destroy_distributed_environment()
        gc.collect()
        torch.cuda.empty_cache()


def open_engine(
    name: str, model_dir: Path, settings: EngineSettings, base_model: Path | None = None
) -> GenerationEngine:
    """Load ``model_dir`` (merged weights, or an adapter over ``base_model``) in engine ``name``.

    Parameters
    ----------
    name
        ``vllm`` (the endpoint's engine) or ``transformers``.
    model_dir
        Merged weights with tokenizer, or a LoRA adapter folder with tokenizer.
    settings
        Device, batch size (transformers), tensor-parallel degree and context length (vLLM).
    base_model
        The base weights an adapter applies to.

    Raises
    ------
    ValueError
        For an unknown engine name.
    """
    if name == "vllm":
        return VllmEngine(model_dir, settings, base_model)
    if name == "transformers":
        return TransformersEngine(model_dir, settings, base_model)
    raise ValueError(f"engine: must be one of {', '.join(EVALUATION_ENGINES)}, got {name!r}")
