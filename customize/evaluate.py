"""Evaluation: held-out data through the base and the customized model; JSON and Markdown.

Metrics (ROUGE-L, perplexity) are computed here from text and log-likelihoods, engine-free;
:mod:`customize.engines` produces those with vLLM (as the endpoint serves) or transformers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from customize.data import Mode, read_jsonl
from customize.engines import EngineSettings, open_engine

__all__ = [
    "EvaluationReport",
    "evaluate",
    "perplexity_from_nll",
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


def perplexity_from_nll(total_nll: float, tokens: int) -> float:
    """Perplexity from a summed negative log-likelihood over a count of predicted tokens."""
    return math.exp(total_nll / max(tokens, 1))


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
    engine: str = "transformers",
    tensor_parallel_degree: int = 1,
    max_model_len: int = 2048,
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
        Model directories (safetensors and tokenizer); the customized one may be a LoRA
        adapter folder, applied over ``base_model``.
    limit
        Evaluate only the first N records (0: all).
    max_new_tokens, max_seq_len, batch_size, device
        Generation and batching settings, the same for both models.
    samples
        Rows in the side-by-side sample table.
    engine, tensor_parallel_degree, max_model_len
        The generation engine (``vllm`` as the chat endpoint runs it, or ``transformers``)
        and, for vLLM, the endpoint's tensor-parallel degree and context length.
    """
    records = read_jsonl(data_file)
    if limit > 0:
        records = records[:limit]
    if not records:
        raise ValueError(f"{data_file}: no records to evaluate")
    settings = EngineSettings(
        device=device,
        batch_size=batch_size,
        tensor_parallel_degree=tensor_parallel_degree,
        max_model_len=max_model_len,
    )
    models = (("base", base_model), ("customized", customized_model))
    table: list[dict[str, str]] = []
    if mode is Mode.FINE_TUNING:
        prompts = [record["prompt"] for record in records]
        references = [record["completion"].strip() for record in records]
        outputs: dict[str, list[str]] = {}
        for name, path in models:
            # One model at a time: the 20.6 B model takes the whole instance.
            generator = open_engine(engine, path, settings, base_model)
            try:
                outputs[name] = generator.generate(prompts, max_new_tokens=max_new_tokens)
            finally:
                generator.close()
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
        heads, tails = [], []
        for text in texts[:samples]:
            words = text.split()
            heads.append(" ".join(words[: len(words) // 2]))
            tails.append(" ".join(words[len(words) // 2 :]))
        scores, continuations = {}, {}
        for name, path in models:
            generator = open_engine(engine, path, settings, base_model)
            try:
                total, count = generator.negative_log_likelihood(texts, max_seq_len=max_seq_len)
                scores[name] = perplexity_from_nll(total, count)
                continuations[name] = generator.generate(heads, max_new_tokens=max_new_tokens)
            finally:
                generator.close()
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
