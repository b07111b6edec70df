"""Evaluation: held-out data through the base and the customized model; JSON and Markdown."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from customize.data import Mode, read_jsonl

__all__ = [
    "EvaluationReport",
    "evaluate",
    "perplexity",
    "render_markdown",
    "rouge_l",
    "write_report",
]


@dataclass
class EvaluationReport:
    """Base versus customized on one held-out set; ``to_dict`` is the JSON schema."""

    mode: Mode
    metric: str
    higher_is_better: bool
    base: float
    customized: float
    examples: int
    base_model: str
    customized_model: str
    samples: list[dict[str, str]]

    @property
    def improved(self) -> bool:
        """True when the customized model does better than the base on the metric."""
        return self.customized > self.base if self.higher_is_better else self.customized < self.base

    def to_dict(self) -> dict[str, Any]:
        """The report as written to ``evaluation.json``."""
        return {
            "mode": self.mode.value,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "base": self.base,
            "customized": self.customized,
            "improved": self.improved,
            "examples": self.examples,
            "models": {"base": self.base_model, "customized": self.customized_model},
            "samples": self.samples,
        }


def rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (Porter-stemmed, as the DialogSum papers report it)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    scores: list[float] = [
        float(scorer.score(reference, prediction)["rougeL"].fmeasure)
        for prediction, reference in zip(predictions, references, strict=True)
    ]
    return sum(scores) / max(len(scores), 1)


def _load(model_dir: Path, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = model.to(device)
    model.eval()
    return tokenizer, model


def generate(
    model_dir: Path,
    prompts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int,
    device: str = "cpu",
    label: str = "",
) -> list[str]:
    """Greedy completions of raw prompts (no chat template: the fine-tuning format is raw text)."""
    import torch

    tokenizer, model = _load(model_dir, device)
    outputs: list[str] = []
    for start in tqdm(
        range(0, len(prompts), batch_size), desc=f"generate {label}".strip(), leave=False
    ):
        batch = tokenizer(
            list(prompts[start : start + batch_size]),
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(device)
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new_tokens = generated[:, batch["input_ids"].shape[1] :]
        outputs.extend(
            text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        )
    return outputs


def perplexity(
    model_dir: Path,
    texts: Sequence[str],
    *,
    max_seq_len: int,
    batch_size: int,
    device: str = "cpu",
    label: str = "",
) -> float:
    """Token-weighted perplexity of texts, each ending in end-of-sequence as training sees them."""
    import torch

    tokenizer, model = _load(model_dir, device)
    tokenizer.padding_side = "right"
    eos = tokenizer.eos_token_id
    total, tokens = 0.0, 0
    for start in tqdm(
        range(0, len(texts), batch_size), desc=f"perplexity {label}".strip(), leave=False
    ):
        encoded = [
            [*tokenizer(text, add_special_tokens=False)["input_ids"][: max_seq_len - 1], eos]
            for text in texts[start : start + batch_size]
        ]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sequence in enumerate(encoded):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        with torch.no_grad():
            loss = model(
                input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)
            ).loss
        count = int(mask[:, 1:].sum())
        total += float(loss) * count
        tokens += count
    return math.exp(total / max(tokens, 1))


def evaluate(
    mode: Mode,
    data_file: Path,
    base_model: Path,
    customized_model: Path,
    *,
    limit: int = 0,
    max_new_tokens: int = 64,
    max_seq_len: int = 512,
    batch_size: int = 8,
    samples: int = 5,
    device: str = "cpu",
) -> EvaluationReport:
    """Compare the base and the customized model on held-out records.

    Parameters
    ----------
    mode
        Fine-tuning: greedy completions of each ``prompt`` scored by ROUGE-L against its
        ``completion``. Continued pre-training: perplexity of each ``input``, and for the sample
        table, completions of each input's first half against its second half.
    data_file
        Held-out JSONL in the mode's format, never seen in training.
    base_model, customized_model
        Model directories (safetensors and tokenizer).
    limit
        Evaluate only the first N records (0: all).
    max_new_tokens, max_seq_len, batch_size, device
        Generation and batching settings, the same for both models.
    samples
        Rows in the side-by-side sample table.
    """
    records = read_jsonl(data_file)
    if limit > 0:
        records = records[:limit]
    if not records:
        raise ValueError(f"{data_file}: no records to evaluate")
    table: list[dict[str, str]] = []
    if mode is Mode.FINE_TUNING:
        prompts = [record["prompt"] for record in records]
        references = [record["completion"].strip() for record in records]
        outputs = {
            name: generate(
                path,
                prompts,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                device=device,
                label=name,
            )
            for name, path in (("base", base_model), ("customized", customized_model))
        }
        scores = {name: rouge_l(texts, references) for name, texts in outputs.items()}
        for index in range(min(samples, len(records))):
            table.append(
                {
                    "prompt": prompts[index],
                    "reference": references[index],
                    "base": outputs["base"][index],
                    "customized": outputs["customized"][index],
                }
            )
        metric, higher_is_better = "rougeL", True
    else:
        texts = [record["input"] for record in records]
        scores = {
            name: perplexity(
                path,
                texts,
                max_seq_len=max_seq_len,
                batch_size=batch_size,
                device=device,
                label=name,
            )
            for name, path in (("base", base_model), ("customized", customized_model))
        }
        heads, tails = [], []
        for text in texts[:samples]:
            words = text.split()
            heads.append(" ".join(words[: len(words) // 2]))
            tails.append(" ".join(words[len(words) // 2 :]))
        continuations = {
            name: generate(
                path,
                heads,
                max_new_tokens=max_new_tokens,
                batch_size=batch_size,
                device=device,
                label=name,
            )
            for name, path in (("base", base_model), ("customized", customized_model))
        }
        for index, head in enumerate(heads):
            table.append(
                {
                    "prompt": head,
                    "reference": tails[index],
                    "base": continuations["base"][index],
                    "customized": continuations["customized"][index],
                }
            )
        metric, higher_is_better = "perplexity", False
    return EvaluationReport(
        mode=mode,
        metric=metric,
        higher_is_better=higher_is_better,
        base=scores["base"],
        customized=scores["customized"],
        examples=len(records),
        base_model=str(base_model),
        customized_model=str(customized_model),
        samples=table,
    )


def _cell(text: str, width: int = 400) -> str:
    flat = " ".join(text.split())
    flat = flat if len(flat) <= width else flat[: width - 1] + "…"
    return flat.replace("|", "\\|")


def render_markdown(report: EvaluationReport) -> str:
    """The report as Markdown: a metric table, then the side-by-side samples."""
    direction = "higher is better" if report.higher_is_better else "lower is better"
    lines = [
        f"# Customization evaluation: {report.mode.value}",
        "",
        f"{report.examples} held-out examples; {report.metric} ({direction}).",
        "",
        "| model | path | " + report.metric + " |",
        "| --- | --- | ---: |",
        f"| base | `{report.base_model}` | {report.base:.4f} |",
        f"| customized | `{report.customized_model}` | {report.customized:.4f} |",
        "",
        f"Customized model {'improves on' if report.improved else 'does not improve on'} the base.",
        "",
        "## Samples",
        "",
        "| # | prompt | reference | base | customized |",
        "| ---: | --- | --- | --- | --- |",
    ]
    for index, sample in enumerate(report.samples, 1):
        lines.append(
            f"| {index} | {_cell(sample['prompt'], 200)} | {_cell(sample['reference'])}"
            f" | {_cell(sample['base'])} | {_cell(sample['customized'])} |"
        )
    return "\n".join(lines) + "\n"


def write_report(report: EvaluationReport, output_dir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.json`` and ``evaluation.md`` into a folder; return their paths."""
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output_dir / "evaluation.json", output_dir / "evaluation.md"
    json_path.write_text(
        json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    markdown_path.write_text(render_markdown(report), encoding="utf-8")
    return json_path, markdown_path
