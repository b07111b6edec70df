"""Dataset preparation in Bedrock custom-model formats: validation, splits, document chunking."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

__all__ = [
    "DIALOGUE_SUMMARY_TEMPLATE",
    "DOCUMENT_SUFFIXES",
    "DatasetValidationError",
    "Mode",
    "OffsetTokenizer",
    "Record",
    "ValidationIssue",
    "ValidationReport",
    "chunk_documents",
    "chunk_text",
    "dialogue_pairs_to_prompts",
    "read_document",
    "read_jsonl",
    "split_records",
    "validate_jsonl",
    "write_jsonl",
]

Record = dict[str, str]

# The DialogSum recipe from Bedrock's fine-tuning walkthrough: an instruction, the dialogue,
# then a cue the completion continues from. The completion starts with a space so that the
# prompt and completion tokenize the way the prompt alone plus its continuation would.
DIALOGUE_SUMMARY_TEMPLATE = "Summarize the following conversation.\n\n{dialogue}\n\nSummary:"

DOCUMENT_SUFFIXES = (".txt", ".md", ".pdf")


class Mode(StrEnum):
    """The two customization modes, named as Bedrock names them."""

    FINE_TUNING = "fine-tuning"
    CONTINUED_PRE_TRAINING = "continued-pre-training"

    @property
    def fields(self) -> tuple[str, ...]:
        """The JSONL fields a record of this mode must carry, each a non-empty string."""
        if self is Mode.FINE_TUNING:
            return ("prompt", "completion")
        return ("input",)


class OffsetTokenizer(Protocol):
    """The slice of a Hugging Face fast tokenizer that chunking needs."""

    def __call__(self, text: str, **kwargs: Any) -> Any:
        """Tokenize text; called with ``return_offsets_mapping=True``."""


@dataclass(frozen=True)
class ValidationIssue:
    """One problem with one line of a JSONL file."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class ValidationReport:
    """What validating one JSONL file found: the valid records and every issue."""

    file: str
    records: list[Record] = field(default_factory=list)
    issues: list[ValidationIssue] = field(default_factory=list)
    max_tokens_seen: int = 0

    @property
    def ok(self) -> bool:
        """True when no line had an issue."""
        return not self.issues

    def raise_for_issues(self) -> None:
        """Raise :class:`DatasetValidationError` listing every issue, if there is any."""
        if self.issues:
            raise DatasetValidationError(self.issues)


class DatasetValidationError(ValueError):
    """A dataset failed validation; ``issues`` names file, line and reason for each problem."""

    def __init__(self, issues: Sequence[ValidationIssue]) -> None:
        self.issues = list(issues)
        shown = "\n".join(f"  {issue}" for issue in self.issues[:50])
        more = f"\n  ... and {len(self.issues) - 50} more" if len(self.issues) > 50 else ""
        super().__init__(f"{len(self.issues)} invalid line(s):\n{shown}{more}")


def _sequence_tokens(record: Record, mode: Mode, count_tokens: Callable[[str], int]) -> int:
    # The training entrypoint appends one end-of-sequence token to every example.
    if mode is Mode.FINE_TUNING:
        return count_tokens(record["prompt"]) + count_tokens(record["completion"]) + 1
    return count_tokens(record["input"]) + 1


def validate_jsonl(
    path: Path,
    mode: Mode,
    *,
    count_tokens: Callable[[str], int] | None = None,
    max_seq_len: int | None = None,
    show_progress: bool = False,
) -> ValidationReport:
    """Validate a Bedrock-format JSONL file line by line.

    Parameters
    ----------
    path
        The JSONL file: ``{"prompt", "completion"}`` per line for fine-tuning,
        ``{"input"}`` per line for continued pre-training.
    mode
        Which of the two formats the file must follow.
    count_tokens
        Counts a text's tokens with the model's tokenizer (no special tokens). Without it the
        length check is skipped.
    max_seq_len
        The longest sequence the training job accepts, in tokens, end-of-sequence included.
    show_progress
        Draw a progress bar on stderr.

    Returns
    -------
    ValidationReport
        Valid records in file order and one issue per bad line (bad JSON, not an object,
        missing or empty field, over the maximum sequence length, duplicate of an earlier line).
    """
    report = ValidationReport(file=str(path))
    first_seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        lines = handle.readlines()
    for number, raw in enumerate(
        tqdm(lines, desc=f"validate {path.name}", disable=not show_progress), 1
    ):

        def fail(reason: str, line: int = number) -> None:
            report.issues.append(ValidationIssue(str(path), line, reason))

        if not raw.strip():
            fail("empty line")
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            fail(f"bad JSON: {error.msg} at column {error.colno}")
            continue
        if not isinstance(value, dict):
            fail(f"bad record: expected a JSON object, got {type(value).__name__}")
            continue
        problems = []
        for name in mode.fields:
            if name not in value:
                problems.append(f"missing field '{name}'")
            elif not isinstance(value[name], str):
                problems.append(
                    f"field '{name}' must be a string, got {type(value[name]).__name__}"
                )
            elif not value[name].strip():
                problems.append(f"empty field '{name}'")
        if problems:
            fail("; ".join(problems))
            continue
        record = {name: value[name] for name in mode.fields}
        key = json.dumps(record, sort_keys=True)
        if key in first_seen:
            fail(f"duplicate of line {first_seen[key]}")
            continue
        first_seen[key] = number
        if count_tokens is not None and max_seq_len is not None:
            tokens = _sequence_tokens(record, mode, count_tokens)
            report.max_tokens_seen = max(report.max_tokens_seen, tokens)
            if tokens > max_seq_len:
                fail(f"too long: {tokens} tokens, max sequence length is {max_seq_len}")
                continue
        report.records.append(record)
    return report


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSONL file that is known to be valid (one JSON object per non-empty line)."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> int:
    """Write records as JSONL (UTF-8, one object per line); return how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def _split_key(record: Record, seed: str) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{seed}\0{canonical}".encode()).hexdigest()


def split_records(
    records: Sequence[Record], *, validation_fraction: float = 0.1, seed: str = "customize"
) -> tuple[list[Record], list[Record]]:
    """Split records into train and validation sets, deterministically.

    Each record's place is decided by a hash of its content and the seed, so the split is the
    same on every machine, does not depend on the order of the input lines, and a record
    stays on its side when others are added.

    Parameters
    ----------
    records
        The records to split.
    validation_fraction
        Share of the records that go to validation, rounded to a whole count; at least one
        record goes to each side when there are two or more and the fraction is above 0.
    seed
        Changes which records are drawn.

    Returns
    -------
    tuple of list
        ``(train, validation)``, each in the input order.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    count = round(len(records) * validation_fraction)
    if validation_fraction > 0 and len(records) >= 2:
        count = min(max(count, 1), len(records) - 1)
    ranked = sorted(range(len(records)), key=lambda index: _split_key(records[index], seed))
    held_out = set(ranked[:count])
    train = [record for index, record in enumerate(records) if index not in held_out]
    validation = [record for index, record in enumerate(records) if index in held_out]
    return train, validation


def dialogue_pairs_to_prompts(
    pairs: Iterable[dict[str, Any]], template: str = DIALOGUE_SUMMARY_TEMPLATE
) -> Iterator[Record]:
    """Wrap ``{"dialogue", "summary"}`` pairs into fine-tuning ``{"prompt", "completion"}`` records.

    Parameters
    ----------
    pairs
        Records with a ``dialogue`` and a ``summary`` string.
    template
        Instruction template with a ``{dialogue}`` placeholder.

    Yields
    ------
    dict
        ``{"prompt": template filled with the dialogue, "completion": " " + summary}``.
    """
    for number, pair in enumerate(pairs, 1):
        dialogue, summary = pair.get("dialogue"), pair.get("summary")
        if not isinstance(dialogue, str) or not isinstance(summary, str):
            raise ValueError(f"pair {number}: needs string fields 'dialogue' and 'summary'")
        yield {
            "prompt": template.format(dialogue=dialogue.strip()),
            "completion": " " + summary.strip(),
        }


def read_document(path: Path) -> str:
    """Return the text of a .txt, .md or .pdf document, whitespace runs within lines collapsed."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader

        text = "\n\n".join(page.extract_text() or "" for page in PdfReader(path).pages)
    elif suffix in (".txt", ".md"):
        text = path.read_text(encoding="utf-8")
    else:
        raise ValueError(f"{path}: unsupported document type {suffix!r}; use {DOCUMENT_SUFFIXES}")
    text = re.sub(r"[ \t]+", " ", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _token_count(tokenizer: OffsetTokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def chunk_text(
    text: str, tokenizer: OffsetTokenizer, *, chunk_tokens: int, overlap_tokens: int
) -> list[str]:
    """Cut text into windows of at most ``chunk_tokens`` tokens that overlap by ``overlap_tokens``.

    Windows are cut on token boundaries and returned as the original text between them
    (via the tokenizer's character offsets), so no text is altered by a decode round trip.
    """
    if not 0 <= overlap_tokens < chunk_tokens:
        raise ValueError("overlap_tokens must be >= 0 and smaller than chunk_tokens")
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets: list[tuple[int, int]] = list(encoding["offset_mapping"])
    chunks = []
    start = 0
    while start < len(offsets):
        end = min(start + chunk_tokens, len(offsets))
        chunk = text[offsets[start][0] : offsets[end - 1][1]].strip()
        # A cut can tokenize differently on its own (a word losing its leading space):
        # give back tokens at the end until the chunk fits the budget by itself.
        while end > start + 1 and _token_count(tokenizer, chunk) > chunk_tokens:
            end -= 1
            chunk = text[offsets[start][0] : offsets[end - 1][1]].strip()
        if chunk:
            chunks.append(chunk)
        if end == len(offsets):
            break
        # Next window starts overlap_tokens before this one's end (always moving forward).
        start = max(start + 1, end - overlap_tokens)
    return chunks


def chunk_documents(
    folder: Path,
    tokenizer: OffsetTokenizer,
    *,
    chunk_tokens: int,
    overlap_tokens: int,
    show_progress: bool = False,
) -> list[Record]:
    """Turn every .txt, .md and .pdf file under a folder into continued-pre-training records.

    Parameters
    ----------
    folder
        Searched recursively; files are read in sorted path order so output is reproducible.
    tokenizer
        The base model's fast tokenizer, so that chunk sizes are counted in its tokens.
    chunk_tokens
        Largest chunk, in tokens. Leave one token of room below the training job's maximum
        sequence length for the end-of-sequence token.
    overlap_tokens
        Tokens shared by consecutive chunks of one document, so that no passage loses its
        context at a cut.
    show_progress
        Draw a progress bar on stderr.

    Returns
    -------
    list of dict
        ``{"input": chunk}`` records, duplicates dropped.
    """
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and path.suffix.lower() in DOCUMENT_SUFFIXES
    )
    if not paths:
        raise ValueError(f"{folder}: no {', '.join(DOCUMENT_SUFFIXES)} documents found")
    records: list[Record] = []
    seen: set[str] = set()
    for path in tqdm(paths, desc="chunk documents", disable=not show_progress):
        for chunk in chunk_text(
            read_document(path), tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens
        ):
            if chunk not in seen:
                seen.add(chunk)
                records.append({"input": chunk})
    return records
