"""Launcher: resolve weights, start the model backend on loopback, serve the app, supervise."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from pydantic import ValidationError

from inference_server.app import build_app
from inference_server.artifacts import download_s3_prefix
from inference_server.backend_client import BackendClient
from inference_server.settings import LauncherSettings, ServingSettings, load_settings

__all__ = [
    "build_vllm_command",
    "free_port",
    "main",
    "prepare_settings",
    "resolve_weights",
]

logger = logging.getLogger("inference_server.launcher")

BACKEND_POLL_S = 0.5
BACKEND_STOP_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def resolve_weights(settings: ServingSettings) -> Path:
    """Make the weights local: download an S3 prefix, or check that a local path exists.

    Parameters
    ----------
    settings
        Validated settings; ``model_id`` is an ``s3://`` URI or a path.

    Returns
    -------
    Path
        A local model directory vLLM can load.
    """
    model_id = settings.model_id
    if model_id.startswith("s3://"):
        started = time.monotonic()
        target = download_s3_prefix(model_id, settings.download_dir)
        logger.info("weights downloaded in %.1f s", time.monotonic() - started)
        return target
    path = Path(settings.resolve(model_id)).resolve()
    if not path.exists():
        raise FileNotFoundError(f"option.model_id: {path} does not exist")
    return path


def build_vllm_command(settings: ServingSettings, model_dir: Path, port: int) -> list[str]:
    """vLLM OpenAI server command line (``vllm serve``) for the settings.

    ``vllm serve`` replaces the deprecated ``python -m vllm.entrypoints.openai.api_server``;
    request logging is off by default since vLLM 0.11 (``--disable-log-requests`` is gone).

    Parameters
    ----------
    settings
        Validated settings.
    model_dir
        Local weights directory.
    port
        Loopback port for the backend.

    Returns
    -------
    list[str]
        The argv to execute.
    """
    command = [
        "vllm",
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--served-model-name",
        settings.served_model_name,
        "--tensor-parallel-size",
        str(settings.tensor_parallel_degree),
        "--max-model-len",
        str(settings.max_model_len),
        "--dtype",
        settings.dtype,
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
    ]
    caching = (
        "--enable-prefix-caching"
        if settings.enable_prefix_caching
        else "--no-enable-prefix-caching"
    )
    command.append(caching)
    return command


def prepare_settings(settings: ServingSettings) -> tuple[ServingSettings, list[str] | None]:
    """Resolve weights and decide the backend command and URL.

    Parameters
    ----------
    settings
        Settings as loaded.

    Returns
    -------
    tuple[ServingSettings, list[str] | None]
        Settings completed with ``backend_url``, ``tokenizer`` and the served model name, and the
        command to start (``None`` for an external backend).
    """
    if settings.backend == "external":
        return settings, None
    model_dir = resolve_weights(settings)
    port = free_port()
    update: dict[str, object] = {
        "backend_url": f"http://127.0.0.1:{port}",
        "tokenizer": settings.tokenizer or str(model_dir),
    }
    command = build_vllm_command(settings, model_dir, port)
    return settings.model_copy(update=update), command


class _Supervisor:
    """Runs the backend process next to the uvicorn server and ties their lifetimes."""

    def __init__(
        self, settings: ServingSettings, command: list[str] | None, server: uvicorn.Server
    ):
        self.settings = settings
        self.command = command
        self.server = server
        self.process: asyncio.subprocess.Process | None = None
        self.failed: str | None = None
        self.stopping = False

    async def start_backend(self) -> None:
        if self.command is None:
            return
        logger.info("starting backend: %s", " ".join(self.command))
        # Own session: a terminal's Ctrl-C reaches only us, and we stop the backend after the
        # in-flight streams have drained.
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command, start_new_session=True
            )
        except OSError as exc:
            self._fail(f"backend could not start: {exc}")

    def _fail(self, reason: str) -> None:
        logger.error("%s", reason)
        self.failed = reason
        services = getattr(self.server.config.app.state, "services", None)  # type: ignore[union-attr]
        if services is not None:
            services.backend_dead = True
        self.server.should_exit = True

    async def watch(self) -> None:
        client = BackendClient(self.settings.backend_url, self.settings.served_model_name)
        try:
            deadline = time.monotonic() + self.settings.backend_startup_timeout_s
            while not await client.healthy():
                if self.process is not None and self.process.returncode is not None:
                    self._fail(f"backend exited with {self.process.returncode} during start-up")
                    return
                if time.monotonic() > deadline:
                    self._fail("backend not healthy within the start-up window")
                    return
                await asyncio.sleep(BACKEND_POLL_S)
            logger.info("backend healthy at %s", self.settings.backend_url)
        finally:
            await client.aclose()
        # A role that cannot load (bad index, template or tokenizer) would keep /ping at 503
        # until SageMaker's start-up timeout; exiting now reports the fault at once.
        while True:
            services = getattr(self.server.config.app.state, "services", None)  # type: ignore[union-attr]
            if services is not None and services.load_error is not None:
                self._fail(f"the {self.settings.role} role failed to load: {services.load_error}")
                return
            if services is not None and services.role_ready:
                break
            await asyncio.sleep(BACKEND_POLL_S)
        if self.process is not None:
            code = await self.process.wait()
            if not self.stopping:
                self._fail(f"backend exited with {code}")

    async def stop_backend(self) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), BACKEND_STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _run(
    settings: ServingSettings, command: list[str] | None, process: LauncherSettings
) -> int:
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=process.host,
        port=process.port,
        log_level=process.log_level,
        access_log=False,
        timeout_graceful_shutdown=process.drain_timeout_s,
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    supervisor = _Supervisor(settings, command, server)
    received: list[int] = []

    def remember(sig: int, _: FrameType | None) -> None:
        # uvicorn re-raises the signal it drained for once it is done; without a handler of our
        # own that would kill the process before the backend is stopped.
        received.append(sig)

    signal.signal(signal.SIGTERM, remember)
    signal.signal(signal.SIGINT, remember)
    await supervisor.start_backend()
    watcher = asyncio.create_task(supervisor.watch())
    try:
        await server.serve()
    finally:
        await supervisor.stop_backend()
        watcher.cancel()
    if supervisor.failed is not None:
        return 1
    logger.info("stopped (signals: %s)", received)
    return 0


def _parser() -> argparse.ArgumentParser:
    # No defaults here: an argument left out falls back to the environment, then the file.
    parser = argparse.ArgumentParser(prog="inference_server serve")
    parser.add_argument("--properties", type=Path, help="serving.properties to read")
    parser.add_argument("--host", help="interface to serve on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port (default $SAGEMAKER_BIND_TO_PORT or 8080)")
    parser.add_argument("--backend", choices=("vllm", "external"))
    parser.add_argument("--backend-url", help="with --backend external: the running backend")
    return parser


def _given(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, load settings, start everything (``python -m inference_server serve``).

    Every setting resolves the same way: an explicit argument, else its environment variable
    (``OPTION_*``, ``SAGEMAKER_BIND_TO_PORT``, ``LOG_LEVEL``, ...), else serving.properties,
    else the default.

    Parameters
    ----------
    argv
        Arguments after ``serve``.

    Returns
    -------
    int
        0 after a clean shutdown, 1 when the backend died or never became healthy, 2 when a
        setting is invalid (the message names it).
    """
    args = _parser().parse_args(argv)
    try:
        process = LauncherSettings(
            **_given(properties=args.properties, host=args.host, port=args.port)
        )
        settings = load_settings(
            process.properties, **_given(backend=args.backend, backend_url=args.backend_url)
        )
    except ValidationError as exc:
        print(f"inference_server: invalid settings\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=process.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per health poll would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings, command = prepare_settings(settings)
    return asyncio.run(_run(settings, command, process))
