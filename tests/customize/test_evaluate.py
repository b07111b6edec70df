"""Evaluation: ROUGE-L and perplexity, base versus customized, the JSON and Markdown report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from customize.cli import main as cli_main
from customize.data import Mode, write_jsonl
from customize.evaluate import evaluate, render_markdown, rouge_l
from customize.train import TrainingPaths, resolve_hyperparameters, train

TEXTS = [
    {"input": f"The moderation endpoint returns the label casual for greeting number {index}."}
    for index in range(8)
]
PAIRS = [
    {
        "prompt": f"Summarize: Anna met Ben on day {index}.\nSummary:",
        "completion": " Decision: they met.",
    }
    for index in range(8)
]


def test_rouge_l_scores_overlap() -> None:
    assert rouge_l(
        ["the meeting moves to Friday"], ["the meeting moves to Friday"]
    ) == pytest.approx(1.0)
    assert rouge_l(["completely unrelated words"], ["the meeting moves to Friday"]) == 0.0
    partial = rouge_l(["the meeting is on Friday"], ["the meeting moves to Friday"])
    assert 0.0 < partial < 1.0


@pytest.fixture(scope="module")
def customized_cpt(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The tiny model after a few full continued-pre-training steps on TEXTS."""
    root = tmp_path_factory.mktemp("cpt")
    write_jsonl(root / "train" / "train.jsonl", TEXTS)
    write_jsonl(root / "validation" / "validation.jsonl", TEXTS[:2])
    paths = TrainingPaths(
        train_dir=root / "train",
        validation_dir=root / "validation",
        model_dir=root / "model",
        output_data_dir=root / "out",
    )
    hp = resolve_hyperparameters(
        {
            "mode": "continued-pre-training",
            "max_steps": "6",
            "learning_rate": "0.005",
            "batch_size": "4",
            "base_model": str(tiny_model_dir),
        }
    )
    return train(hp, paths).model_dir


@pytest.mark.timeout(120)
def test_perplexity_report_prefers_the_customized_model(
    tmp_path: Path, tiny_model_dir: Path, customized_cpt: Path
) -> None:
    data = tmp_path / "heldout.jsonl"
    write_jsonl(data, TEXTS[:3])
    report = evaluate(
        Mode.CONTINUED_PRE_TRAINING,
        data,
        tiny_model_dir,
        customized_cpt,
        max_new_tokens=4,
        samples=2,
        max_seq_len=64,
    )
    assert report.metric == "perplexity"
    assert not report.higher_is_better
    assert report.customized < report.base
    assert report.improved
    assert len(report.samples) == 2
    assert report.samples[0]["prompt"] + " " + report.samples[0]["reference"] == TEXTS[0]["input"]


@pytest.mark.timeout(120)
def test_cli_writes_json_and_markdown_reports(
    tmp_path: Path, tiny_model_dir: Path, customized_cpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "heldout.jsonl"
    write_jsonl(data, PAIRS)
    out = tmp_path / "report"
    code = cli_main(
        [
            "evaluate",
            "--mode",
            "fine-tuning",
            "--data",
            str(data),
            "--base-model",
            str(tiny_model_dir),
            "--customized-model",
            str(customized_cpt),
            "--out-dir",
            str(out),
            "--limit",
            "3",
            "--max-new-tokens",
            "3",
            "--samples",
            "2",
        ]
    )
    assert code == 0
    report = json.loads((out / "evaluation.json").read_text(encoding="utf-8"))
    assert set(report) == {
        "mode",
        "metric",
        "higher_is_better",
        "base",
        "customized",
        "improved",
        "examples",
        "models",
        "samples",
    }
    assert (report["mode"], report["metric"], report["higher_is_better"], report["examples"]) == (
        "fine-tuning",
        "rougeL",
        True,
        3,
    )
    assert 0.0 <= report["base"] <= 1.0
    assert 0.0 <= report["customized"] <= 1.0
    assert report["improved"] == (report["customized"] > report["base"])
    assert report["models"] == {"base": str(tiny_model_dir), "customized": str(customized_cpt)}
    assert len(report["samples"]) == 2
    assert set(report["samples"][0]) == {"prompt", "reference", "base", "customized"}
    assert report["samples"][0]["reference"] == "Decision: they met."
    markdown = (out / "evaluation.md").read_text(encoding="utf-8")
    assert "| base |" in markdown
    assert "| customized |" in markdown
    assert "| # | prompt | reference | base | customized |" in markdown
    assert markdown.count("\n| 1 |") == 1
    last_line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last_line["metric"] == "rougeL"


def test_markdown_cells_escape_pipes_and_newlines(tiny_model_dir: Path) -> None:
    from customize.evaluate import EvaluationReport

    report = EvaluationReport(
        mode=Mode.FINE_TUNING,
        metric="rougeL",
        higher_is_better=True,
        base=0.1,
        customized=0.5,
        examples=1,
        base_model="b",
        customized_model="c",
        samples=[{"prompt": "a|b\nc", "reference": "r", "base": "x", "customized": "y"}],
    )
    row = render_markdown(report).splitlines()[-1]
    assert row == "| 1 | a\\|b c | r | x | y |"
    assert "improves on" in render_markdown(report)
