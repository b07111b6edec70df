"""Engine flags checked by the engine: the launcher's ``vllm serve`` argv, parsed by pinned vLLM.

For each environment and role the launcher's own ``build_vllm_command`` builds the argv from
the role's ``serving.properties`` and the environment's ``OPTION_*`` values (as the CDK app sets
them); a side virtual environment under ``.cache/`` holds ``vllm==<base_image.version>``,
installed ``--no-deps`` next to the CPU build of torch and the few packages its CLI imports
(``requirements/vllm-probe.txt``), and ``preflight/vllm_probe.py`` parses each argv there with
vLLM's ``vllm serve`` parser, its serve-argument validation and ``AsyncEngineArgs.from_cli_args``.
vLLM imports on a CPU-only machine this way once its platform is set to CPU, as ``vllm bench``
does; what needs a GPU (device memory, kernels) is not exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from preflight.report import CheckResult, fail, ok
from stacks.config import EnvironmentConfig, load_environment

__all__ = ["ensure_probe_env", "probe", "vllm_argv"]

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "vllm_probe.py"
PROBE_REQUIREMENTS = ROOT / "requirements" / "vllm-probe.txt"
# Where the weights land in the container; only its shape matters to the parser.
MODEL_DIR = Path("/opt/ml/model-weights")
BACKEND_PORT = 8081


def vllm_argv(config: EnvironmentConfig, role: str, root: Path = ROOT) -> list[str]:
    """The ``vllm serve`` argv the launcher builds for ``role`` of environment ``config``.

    Parameters
    ----------
    config:
        The environment.
    role:
        ``chat`` or ``moderation``.
    root:
        Repository root (``model_artifacts/<role>/serving.properties``).

    Returns
    -------
    list[str]
        The launcher's command line.
    """
    from inference_server.launcher import build_vllm_command
    from inference_server.settings import load_settings

    endpoint = getattr(config, role)
    model = endpoint.model
    # The engine-facing OPTION_* values of the SageMaker Model (docs/interfaces.md).
    overrides = {
        "model_id": f"s3://chatbot-{config.name}-assets/models/{model.weights_name}/",
        "tensor_parallel_degree": str(endpoint.tensor_parallel_degree),
        "max_model_len": str(model.max_model_len),
        "dtype": model.dtype,
        "gpu_memory_utilization": str(model.gpu_memory_utilization),
        "enable_prefix_caching": json.dumps(model.enable_prefix_caching),
        "max_new_tokens_cap": str(model.max_new_tokens_cap),
    }
    settings = load_settings(root / "model_artifacts" / role / "serving.properties", **overrides)
    return build_vllm_command(settings, MODEL_DIR, BACKEND_PORT)


def _run(command: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def ensure_probe_env(version: str, cache: Path = ROOT / ".cache") -> Path:
    """Create (once) the side venv with ``vllm==version`` and return its python.

    Parameters
    ----------
    version:
        The vLLM version.
    cache:
        Where the venv lives (``<cache>/vllm-probe-<version>``).

    Returns
    -------
    Path
        The venv's python.

    Raises
    ------
    RuntimeError
        With pip's output, when installing fails.
    """
    venv = cache / f"vllm-probe-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".complete"
    if stamp.exists():
        return python
    _run([sys.executable, "-m", "venv", "--clear", str(venv)])
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    for step in (
        [*pip, "--no-deps", "-r", str(PROBE_REQUIREMENTS)],
        [*pip, "--no-deps", f"vllm=={version}"],
    ):
        done = _run(step, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(step)} failed:\n{done.stdout}{done.stderr}"[-3000:])
    stamp.write_text(version + "\n")
    return python


def probe_versions(root: Path = ROOT) -> list[str]:
    """The vLLM versions of the environments' base images in cdk.json (sorted, distinct)."""
    context = json.loads((root / "cdk.json").read_text())["context"]
    versions = set()
    for name in context["chatbot:environments"]:
        base = load_environment(context, name).base_image
        if base.framework == "vllm" and base.version is not None:
            versions.add(base.version)
    return sorted(versions)


def prepare_probe_envs(root: Path = ROOT) -> list[Path]:
    """Create the side venv of every vLLM version in cdk.json (``make setup`` runs this).

    Building them at set-up keeps the install out of the test suite and out of a race between
    two first users (``make check-engine-args`` beside ``make test`` in CI).

    Parameters
    ----------
    root:
        Repository root.

    Returns
    -------
    list of Path
        The venvs' pythons.
    """
    return [ensure_probe_env(version, root / ".cache") for version in probe_versions(root)]


def probe(python: Path, argvs: Mapping[str, list[str]]) -> dict[str, str | None]:
    """Parse each argv with the venv's vLLM; ``label -> None`` (accepted) or the error."""
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "ERROR", "PYTHONPATH": ""}
    done = _run([str(python), str(PROBE)], input=json.dumps(argvs), env=env, timeout=600)
    answers: dict[str, str | None] = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            answers[item["label"]] = item["error"]
    for label in argvs:
        if label not in answers:
            answers[label] = f"the probe failed: {(done.stdout + done.stderr)[-1500:]}"
    return answers


def check_engine_args(
    env_names: Sequence[str] | None = None,
    *,
    root: Path = ROOT,
) -> Iterator[CheckResult]:
    """Check every environment's and role's vLLM argv with that environment's vLLM version.

    Parameters
    ----------
    env_names:
        Environments to check; default all in cdk.json.
    root:
        Repository root.

    Yields
    ------
    CheckResult
        One per environment and role.
    """
    context = json.loads((root / "cdk.json").read_text())["context"]
    names = list(env_names or context["chatbot:environments"])
    by_version: dict[str, dict[str, list[str]]] = {}
    for name in names:
        config = load_environment(context, name)
        if config.base_image.framework != "vllm" or config.base_image.version is None:
            yield ok(f"engine args {name}", "base image is not a vLLM DLC: nothing to check")
            continue
        for role in ("chat", "moderation"):
            argv = vllm_argv(config, role, root)
            by_version.setdefault(config.base_image.version, {})[f"{name} {role}"] = argv
    for version, argvs in sorted(by_version.items()):
        try:
            python = ensure_probe_env(version)
        except RuntimeError as error:
            yield fail(f"engine args vllm=={version}", f"cannot install the probe: {error}")
            continue
        for label, refusal in probe(python, argvs).items():
            name = f"engine args {label} (vllm=={version})"
            if refusal is None:
                yield ok(name, " ".join(argvs[label][2:]))
            else:
                yield fail(name, f"{refusal}: fix build_vllm_command or the settings in cdk.json")
