"""Retrievers behind one interface: a Faiss index over a passage store, or an HTTP search API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import httpx
import numpy as np

from inference_server.prompting import Passage

__all__ = [
    "INDEX_FILE",
    "META_FILE",
    "PASSAGES_FILE",
    "Embedder",
    "FaissRetriever",
    "HttpSearchRetriever",
    "Retriever",
    "json_path",
    "load_embedder",
]

INDEX_FILE = "index.faiss"
PASSAGES_FILE = "passages.jsonl"
META_FILE = "index.json"


class Retriever(Protocol):
    """Finds passages relevant to a query."""

    async def search(self, query: str, top_k: int) -> list[Passage]:
        """Return at most ``top_k`` passages, best first."""
        ...


class Embedder(Protocol):
    """The slice of ``SentenceTransformer`` we use."""

    def encode(self, sentences: Any, **kwargs: Any) -> Any: ...


def load_embedder(path: Path) -> Embedder:
    """Load a sentence-transformers model from a local directory, on CPU.

    The embedding model is tiny next to the LLM; keeping it on CPU leaves all GPU memory to
    vLLM, whose ``gpu_memory_utilization`` budget assumes it is alone.

    Parameters
    ----------
    path
        A sentence-transformers model directory.

    Returns
    -------
    Embedder
        The model.
    """
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    return cast(Embedder, model)


def embed(embedder: Embedder, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """Embed texts as L2-normalised float32 rows, so inner product is cosine similarity.

    Parameters
    ----------
    embedder
        The sentence-transformers model.
    texts
        Texts to embed.
    batch_size
        Encoding batch size.

    Returns
    -------
    numpy.ndarray
        ``(len(texts), dim)`` float32 array.
    """
    vectors = embedder.encode(
        list(texts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return np.ascontiguousarray(vectors, dtype=np.float32)


class FaissRetriever:
    """Cosine-similarity search over a Faiss index built by ``build_index``.

    Parameters
    ----------
    index_dir
        Directory with ``index.faiss``, ``passages.jsonl`` and ``index.json``.
    embedder
        The embedding model the index was built with.
    min_score
        Passages scoring below this cosine similarity are dropped.
    """

    def __init__(self, index_dir: Path, embedder: Embedder, *, min_score: float) -> None:
        import faiss

        self.meta: dict[str, Any] = json.loads((index_dir / META_FILE).read_text("utf-8"))
        self._index = faiss.read_index(str(index_dir / INDEX_FILE))
        if hasattr(self._index, "hnsw"):
            self._index.hnsw.efSearch = int(self.meta.get("hnsw_ef_search", 64))
        with (index_dir / PASSAGES_FILE).open(encoding="utf-8") as handle:
            self._passages = [json.loads(line) for line in handle if line.strip()]
        if self._index.ntotal != len(self._passages):
            raise ValueError(
                f"{index_dir}: index holds {self._index.ntotal} vectors "
                f"but the passage store {len(self._passages)}"
            )
        self._embedder = embedder
        self._min_score = min_score

    def __len__(self) -> int:
        return len(self._passages)

    def search_sync(self, query: str, top_k: int) -> list[Passage]:
        """Blocking search (embedding + Faiss); ``search`` runs it in a worker thread.

        Parameters
        ----------
        query
            The user's question.
        top_k
            Maximum number of passages.

        Returns
        -------
        list[Passage]
            Passages at or above ``min_score``, best first.
        """
        vector = embed(self._embedder, [query])
        scores, ids = self._index.search(vector, min(top_k, len(self._passages)))
        results: list[Passage] = []
        for score, row in zip(scores[0].tolist(), ids[0].tolist(), strict=True):
            if row < 0 or score < self._min_score:
                continue
            record = self._passages[row]
            results.append(
                Passage(id=record["id"], title=record["title"], text=record["text"], score=score)
            )
        return results

    async def search(self, query: str, top_k: int) -> list[Passage]:
        """Search without blocking the event loop (Faiss and torch release the GIL)."""
        return await asyncio.to_thread(self.search_sync, query, top_k)


def json_path(document: Any, path: str) -> Any:
    """Follow a dotted path (``data.hits.0.title``) through dicts and lists.

    A dotted path covers what search APIs return; a JSONPath library would add a dependency for
    features (filters, wildcards) that a retriever configuration does not need.

    Parameters
    ----------
    document
        Parsed JSON.
    path
        Dot-separated keys or list indices; ``""`` returns the document itself.

    Returns
    -------
    Any
        The value found.
    """
    value = document
    for part in filter(None, path.split(".")):
        if isinstance(value, list):
            value = value[int(part)]
        elif isinstance(value, dict):
            value = value[part]
        else:
            raise KeyError(f"cannot follow {part!r} in {path!r}")
    return value


class HttpSearchRetriever:
    """Calls an HTTP search API (GET ``url?<query_param>=...&top_k=...``) and maps its JSON.

    Parameters
    ----------
    url
        The search endpoint.
    query_param
        Query-string parameter carrying the question.
    results_path, id_path, title_path, text_path, score_path
        Dotted paths to the result list, and within each result to its fields.
    min_score
        Results scoring below this are dropped.
    client
        Optional shared ``httpx.AsyncClient``.
    """

    def __init__(
        self,
        url: str,
        *,
        query_param: str = "q",
        results_path: str = "results",
        id_path: str = "id",
        title_path: str = "title",
        text_path: str = "text",
        score_path: str = "score",
        min_score: float = float("-inf"),
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url
        self._query_param = query_param
        self._paths = (results_path, id_path, title_path, text_path, score_path)
        self._min_score = min_score
        self._client = client or httpx.AsyncClient(timeout=10.0)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()

    async def search(self, query: str, top_k: int) -> list[Passage]:
        """Query the API and map its results to passages.

        Parameters
        ----------
        query
            The user's question.
        top_k
            Maximum number of passages (also sent as ``top_k``).

        Returns
        -------
        list[Passage]
            Passages at or above ``min_score``, in the API's order.
        """
        response = await self._client.get(
            self._url, params={self._query_param: query, "top_k": top_k}
        )
        response.raise_for_status()
        results_path, id_path, title_path, text_path, score_path = self._paths
        passages: list[Passage] = []
        for item in json_path(response.json(), results_path)[:top_k]:
            score = float(json_path(item, score_path))
            if score < self._min_score:
                continue
            passages.append(
                Passage(
                    id=str(json_path(item, id_path)),
                    title=str(json_path(item, title_path)),
                    text=str(json_path(item, text_path)),
                    score=score,
                )
            )
        return passages
