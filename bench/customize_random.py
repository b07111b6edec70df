"""The customization entrypoints with random weights built on the GPU instead of read from disk.

Run by hand on the GPU machine (``bench/customize_gpu.sh``), never in CI. The GPT-NeoX-20B
shape's 41 GB of bf16 weights cannot be carried to the device, and writing then reading them
there would cost minutes of device time for no figure: tokens/s and memory do not depend on
the weights' values. So ``AutoModelForCausalLM.from_pretrained`` is replaced by a random
model of the folder's ``config.json`` (seeded, so base and customized share one base),
built directly on this process's GPU, and the real ``customize.train`` / ``customize``
command lines run unchanged otherwise: data pipeline, LoRA, checkpointing, FSDP under
torchrun, saving, evaluation.

``python -m bench.customize_random prepare DIR`` writes the 20B-shape base folder (config and
a word-level tokenizer of its vocabulary) and synthetic datasets of full 512-token records.
``python -m bench.customize_random train ARGS`` / ``evaluate ARGS`` run the entrypoints;
``reference DIR STEPS`` runs the bare transformers + peft loop at the same settings.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main"]

END_OF_TEXT = "<|endoftext|>"
UNKNOWN = "<unk>"

NEOX_20B_CONFIG: dict[str, Any] = {
    "architectures": ["GPTNeoXForCausalLM"],
    "model_type": "gpt_neox",
    "hidden_size": 6144,
    "num_hidden_layers": 44,
    "num_attention_heads": 64,
    "intermediate_size": 24576,
    "vocab_size": 50432,
    "rotary_pct": 0.25,
    "max_position_embeddings": 2048,
    "bos_token_id": 0,
    "eos_token_id": 0,
    "tie_word_embeddings": False,
    "use_parallel_residual": True,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-05,
}
"""GPT-NeoX-20B's published shape, as ``bench.gpu_backend.NEOX_20B_SHAPE``, as a config.json."""


def _random_from_pretrained(path: Any, *args: Any, **kwargs: Any) -> Any:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    config._attn_implementation = "sdpa"
    dtype = kwargs.get("dtype") or torch.float32
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    started = time.perf_counter()
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            auto: Any = AutoModelForCausalLM  # from_config is untyped in transformers
            model = auto.from_config(config)
    finally:
        torch.set_default_dtype(previous)
    print(
        f"bench: random {config.model_type} ({sum(p.numel() for p in model.parameters()) / 1e9:.2f}"
        f" B params, {dtype}) built on {device} in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return model


def _patch() -> None:
    import transformers

    setattr(transformers.AutoModelForCausalLM, "from_pretrained", _random_from_pretrained)  # noqa: B010


def _words(rng: random.Random, count: int, vocab_size: int) -> str:
    return " ".join(f"w{rng.randrange(2, vocab_size)}" for _ in range(count))


TINY_OVERRIDES: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
}
"""The same family at CPU size, for a smoke run of this script (``prepare DIR tiny``)."""


def prepare(folder: Path, *, tiny: bool = False) -> None:
    """Write ``base/`` (config, tokenizer) and ``cpt/`` and ``ft/`` datasets under ``folder``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from customize.data import write_jsonl

    vocab_size = int(NEOX_20B_CONFIG["vocab_size"])
    base = folder / "base"
    base.mkdir(parents=True, exist_ok=True)
    config = NEOX_20B_CONFIG | (TINY_OVERRIDES if tiny else {})
    (base / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    vocab = {END_OF_TEXT: 0, UNKNOWN: 1} | {f"w{i}": i for i in range(2, vocab_size)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNKNOWN))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer_class: Any = PreTrainedTokenizerFast
    tokenizer_class(
        tokenizer_object=core, eos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    ).save_pretrained(str(base))
    rng = random.Random(0)
    # Continued pre-training records longer than 512 tokens: truncated to exactly 512.
    write_jsonl(
        folder / "cpt/train/train.jsonl",
        [{"input": _words(rng, 600, vocab_size)} for _ in range(256)],
    )
    write_jsonl(
        folder / "cpt/validation/validation.jsonl",
        [{"input": _words(rng, 600, vocab_size)} for _ in range(8)],
    )
    write_jsonl(
        folder / "cpt/heldout.jsonl", [{"input": _words(rng, 200, vocab_size)} for _ in range(16)]
    )
    write_jsonl(
        folder / "ft/heldout.jsonl",
        [
            {"prompt": _words(rng, 96, vocab_size), "completion": " " + _words(rng, 24, vocab_size)}
            for _ in range(16)
        ],
    )
    print(f"wrote {base} and the datasets under {folder}")


def reference(folder: Path, steps: int) -> None:
    """The reference loop: plain transformers + peft, fixed random batches, nothing else.

    Same settings as ``bench/customize_gpu.sh`` trains with (r=16 on query_key_value and
    dense, gradient checkpointing, bf16, batch 8 x 512), so the entrypoint's overhead (data
    pipeline, logging, scheduler, clipping) is the difference between the two figures.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    model = _random_from_pretrained(folder / "base", dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    peft_config = LoraConfig(
        r=16, lora_alpha=32, target_modules=["query_key_value", "dense"], task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, peft_config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    device = next(model.parameters()).device
    ids = torch.randint(2, model.config.vocab_size, (8, 512), device=device)
    torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    steady = sorted(times[2:])
    median = steady[len(steady) // 2]
    print(
        json.dumps(
            {
                "reference_median_step_seconds": round(median, 3),
                "reference_tokens_per_second": round(8 * 512 / median, 1),
                "reference_peak_gpu_memory_gib": round(
                    torch.cuda.max_memory_allocated(device) / 2**30, 2
                ),
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """``prepare DIR``, or ``train``/``evaluate`` with the entrypoints' own arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["prepare"] and len(args) in (2, 3):
        prepare(Path(args[1]), tiny=args[2:] == ["tiny"])
        return 0
    if args[:1] == ["reference"] and len(args) == 3:
        reference(Path(args[1]), int(args[2]))
        return 0
    _patch()
    started = time.perf_counter()
    if args[:1] == ["train"]:
        from customize.train import main as train_main

        code = train_main(args[1:], worker=("-m", "bench.customize_random", "train"))
    elif args[:1] == ["evaluate"]:
        from customize.cli import main as cli_main

        code = cli_main(args)
    else:
        print("usage: python -m bench.customize_random prepare DIR | train ... | evaluate ...")
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"bench: {args[0]} wall seconds {time.perf_counter() - started:.1f}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
