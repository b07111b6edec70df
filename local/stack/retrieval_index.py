"""Build the sample retrieval index before the chat container starts, when it is missing."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from inference_server.retrieval import INDEX_FILE, META_FILE, PASSAGES_FILE
from inference_server.settings import load_settings
from local.stack.config import REPO_ROOT

CHAT_ARTIFACTS = REPO_ROOT / "model_artifacts" / "chat"
"""The chat role's artifacts: serving.properties, the sample corpus and its index."""

SAMPLE_CORPUS = CHAT_ARTIFACTS / "corpus"


def index_is_complete(index_dir: Path) -> bool:
    """Tell whether ``index_dir`` holds every file the chat container loads."""
    return all((index_dir / name).is_file() for name in (INDEX_FILE, PASSAGES_FILE, META_FILE))


def ensure_sample_index(
    env: Mapping[str, str],
    *,
    model_id: str,
    artifacts_dir: Path = CHAT_ARTIFACTS,
    corpus: Path = SAMPLE_CORPUS,
) -> Path | None:
    """Build the chat role's Faiss index from the sample corpus unless it is already there.

    The index directory and embedding model are the ones the chat container will load, read
    from its serving.properties, so the two cannot disagree. The build runs the container's
    own ``build-index`` CLI.

    Parameters
    ----------
    env
        Environment for the build (import path, offline model switches).
    model_id
        The chat model's weights, which serving.properties requires (the index ignores them).
    artifacts_dir
        Directory holding the chat role's serving.properties.
    corpus
        Documents to index when the index is missing.

    Returns
    -------
    Path or None
        The index directory, or None when the chat role does not use a Faiss index.

    Raises
    ------
    subprocess.CalledProcessError
        The build failed; its output has already been printed.
    """
    settings = load_settings(artifacts_dir / "serving.properties", model_id=model_id)
    if settings.retriever != "faiss":
        return None
    index_dir = Path(settings.resolve(settings.retrieval_index))
    if index_is_complete(index_dir):
        return index_dir
    print(f"Building the sample retrieval index {index_dir} from {corpus}", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "inference_server.build_index",
            str(corpus),
            "--output",
            str(index_dir),
            "--embedding-model",
            settings.embedding_model,
            "--no-progress",
        ],
        check=True,
        cwd=REPO_ROOT,
        env=dict(env),
    )
    return index_dir
