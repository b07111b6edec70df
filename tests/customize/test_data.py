"""Dataset validation, splits, prompt wrapping and document chunking."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from customize.cli import main as cli_main
from customize.data import (
    DIALOGUE_SUMMARY_TEMPLATE,
    DatasetValidationError,
    Mode,
    chunk_documents,
    chunk_text,
    dialogue_pairs_to_prompts,
    read_document,
    split_records,
    validate_jsonl,
)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _ft(prompt: str, completion: str) -> str:
    return json.dumps({"prompt": prompt, "completion": completion})


def _only_issue(path: Path, mode: Mode, **kwargs: Any) -> tuple[int, str]:
    report = validate_jsonl(path, mode, **kwargs)
    assert len(report.issues) == 1, report.issues
    issue = report.issues[0]
    assert issue.file == str(path)
    return issue.line, issue.reason


def test_valid_fine_tuning_file_yields_records_in_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", [_ft("a?", " b"), _ft("c?", " d")])
    report = validate_jsonl(path, Mode.FINE_TUNING)
    assert report.ok
    assert report.records == [
        {"prompt": "a?", "completion": " b"},
        {"prompt": "c?", "completion": " d"},
    ]


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ft.jsonl", [_ft("a", "b"), '{"prompt": "x", "completion": ', _ft("c", "d")]
    )
    line, reason = _only_issue(path, Mode.FINE_TUNING)
    assert line == 2
    assert reason.startswith("bad JSON")


def test_record_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", ['["prompt", "completion"]'])
    assert _only_issue(path, Mode.FINE_TUNING) == (
        1,
        "bad record: expected a JSON object, got list",
    )


def test_missing_field_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", [_ft("a", "b"), json.dumps({"prompt": "only a prompt"})])
    assert _only_issue(path, Mode.FINE_TUNING) == (2, "missing field 'completion'")


def test_empty_field_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path / "cpt.jsonl", [json.dumps({"input": "   "})])
    assert _only_issue(path, Mode.CONTINUED_PRE_TRAINING) == (1, "empty field 'input'")


def test_non_string_field_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "cpt.jsonl", [json.dumps({"input": 42})])
    assert _only_issue(path, Mode.CONTINUED_PRE_TRAINING) == (
        1,
        "field 'input' must be a string, got int",
    )


def test_empty_line_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", [_ft("a", "b"), "", _ft("c", "d")])
    assert _only_issue(path, Mode.FINE_TUNING) == (2, "empty line")


def test_duplicate_points_at_first_occurrence(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", [_ft("a", "b"), _ft("c", "d"), _ft("a", "b")])
    assert _only_issue(path, Mode.FINE_TUNING) == (3, "duplicate of line 1")


def test_over_max_sequence_length_counts_model_tokens(tmp_path: Path, tokenizer: Any) -> None:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    short, long = "Summarize this.", "word " * 300
    path = _write(tmp_path / "ft.jsonl", [_ft(short, " ok"), _ft(long, " ok")])
    expected = count(long) + count(" ok") + 1  # the end-of-sequence token the trainer appends
    line, reason = _only_issue(path, Mode.FINE_TUNING, count_tokens=count, max_seq_len=64)
    assert line == 2
    assert reason == f"too long: {expected} tokens, max sequence length is 64"


def test_raise_for_issues_lists_every_issue(tmp_path: Path) -> None:
    path = _write(tmp_path / "ft.jsonl", ["nope", json.dumps({"prompt": "a"})])
    report = validate_jsonl(path, Mode.FINE_TUNING)
    with pytest.raises(DatasetValidationError) as caught:
        report.raise_for_issues()
    assert len(caught.value.issues) == 2
    assert f"{path}:1: bad JSON" in str(caught.value)
    assert f"{path}:2: missing field 'completion'" in str(caught.value)


def test_cli_validate_exits_nonzero_and_prints_location(
    tmp_path: Path, smollm2_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(
        tmp_path / "cpt.jsonl", [json.dumps({"input": "fine"}), json.dumps({"text": "wrong key"})]
    )
    code = cli_main(
        [
            "prepare",
            "validate",
            str(path),
            "--mode",
            "continued-pre-training",
            "--tokenizer",
            str(smollm2_dir),
        ]
    )
    assert code == 1
    assert f"{path}:2: missing field 'input'" in capsys.readouterr().err


RECORDS = [
    {"prompt": f"question {index}", "completion": f" answer {index}"} for index in range(100)
]


def test_split_is_deterministic_and_sized() -> None:
    train, validation = split_records(RECORDS, validation_fraction=0.2)
    assert (train, validation) == split_records(RECORDS, validation_fraction=0.2)
    assert len(validation) == 20
    assert len(train) == 80
    assert not {json.dumps(r) for r in train} & {json.dumps(r) for r in validation}


def test_split_does_not_depend_on_input_order() -> None:
    shuffled = list(RECORDS)
    random.Random(7).shuffle(shuffled)
    _, validation = split_records(RECORDS, validation_fraction=0.2)
    _, validation_shuffled = split_records(shuffled, validation_fraction=0.2)
    assert sorted(map(json.dumps, validation)) == sorted(map(json.dumps, validation_shuffled))


def test_split_seed_changes_the_draw_and_small_sets_keep_both_sides() -> None:
    _, first = split_records(RECORDS, validation_fraction=0.2, seed="a")
    _, second = split_records(RECORDS, validation_fraction=0.2, seed="b")
    assert first != second
    train, validation = split_records(RECORDS[:3], validation_fraction=0.05)
    assert (len(train), len(validation)) == (2, 1)


def test_dialogue_pairs_wrap_into_the_instruction_template() -> None:
    [record] = dialogue_pairs_to_prompts(
        [{"dialogue": "A: hi\nB: hello ", "summary": " A greeted B."}]
    )
    assert record == {
        "prompt": DIALOGUE_SUMMARY_TEMPLATE.format(dialogue="A: hi\nB: hello"),
        "completion": " A greeted B.",
    }
    assert record["prompt"].startswith("Summarize the following conversation.")
    assert record["prompt"].endswith("Summary:")
    with pytest.raises(ValueError, match="pair 1"):
        list(dialogue_pairs_to_prompts([{"dialogue": "no summary"}]))


TEXT = " ".join(
    f"Sentence number {index} talks about endpoints and sessions." for index in range(60)
)


def test_chunks_respect_the_token_budget_and_overlap(tokenizer: Any) -> None:
    chunks = chunk_text(TEXT, tokenizer, chunk_tokens=40, overlap_tokens=8)
    lengths = [len(tokenizer(chunk, add_special_tokens=False)["input_ids"]) for chunk in chunks]
    assert len(chunks) > 3
    assert max(lengths) <= 40
    for previous, following in itertools.pairwise(chunks):
        # The next chunk opens with text that closed the previous one.
        assert following[:20] in previous[-60:]
    assert chunks[0].startswith("Sentence number 0")
    assert chunks[-1].endswith("sessions.")


def test_chunking_refuses_overlap_not_below_chunk_size(tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        chunk_text(TEXT, tokenizer, chunk_tokens=16, overlap_tokens=16)


def _minimal_pdf(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def test_documents_folder_becomes_cpt_records(tmp_path: Path, tokenizer: Any) -> None:
    docs = tmp_path / "docs"
    (docs / "nested").mkdir(parents=True)
    (docs / "a.md").write_text(
        "# Runbook\n\nThe chat endpoint   answers /ping.\n", encoding="utf-8"
    )
    (docs / "nested" / "b.txt").write_text("Sessions expire after the TTL.", encoding="utf-8")
    (docs / "c.pdf").write_bytes(_minimal_pdf("Moderation has five labels."))
    (docs / "ignored.csv").write_text("x,y", encoding="utf-8")
    assert read_document(docs / "c.pdf") == "Moderation has five labels."
    records = chunk_documents(docs, tokenizer, chunk_tokens=64, overlap_tokens=8)
    assert records == [
        {"input": "# Runbook\n\nThe chat endpoint answers /ping."},
        {"input": "Moderation has five labels."},
        {"input": "Sessions expire after the TTL."},
    ]


def test_documents_folder_without_documents_is_an_error(tmp_path: Path, tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"no \.txt, \.md, \.pdf documents"):
        chunk_documents(tmp_path, tokenizer, chunk_tokens=64, overlap_tokens=8)


def test_prepare_dialogues_writes_channels_and_heldout(tmp_path: Path, smollm2_dir: Path) -> None:
    pairs = [
        {"dialogue": f"A: can we meet at {hour}?\nB: yes.", "summary": f"A and B meet at {hour}."}
        for hour in range(20)
    ]
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(pair) + "\n" for pair in pairs), encoding="utf-8")
    out = tmp_path / "prepared"
    code = cli_main(
        [
            "prepare",
            "dialogues",
            "--pairs",
            str(source),
            "--heldout",
            str(source),
            "--out-dir",
            str(out),
            "--tokenizer",
            str(smollm2_dir),
            "--validation-fraction",
            "0.25",
        ]
    )
    assert code == 0
    train = (out / "train" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    validation = (out / "validation" / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    assert (len(train), len(validation)) == (15, 5)
    assert json.loads(train[0])["prompt"].startswith("Summarize the following conversation.")
    assert len((out / "heldout" / "heldout.jsonl").read_text(encoding="utf-8").splitlines()) == 20
