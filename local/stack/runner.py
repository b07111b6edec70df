"""Run the local stack under honcho, wait until every part is healthy, print the ready line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
from honcho.environ import parse_procfile
from honcho.manager import Manager

from local.stack.config import (
    DEFAULT_PROCFILE,
    HEALTH_URLS_VARIABLE,
    LOCAL_AWS_KEY,
    REPO_ROOT,
    StackConfig,
)
from local.stack.dynamodb import ensure_session_table
from local.stack.retrieval_index import ensure_sample_index

READY_PREFIX = "Local stack ready:"
"""Start of the one line printed once every part answers its health check."""

_SCRIPTED_MODERATION_PROCESS = "scripted_moderation"
_SCRIPTED_CHAT_PROCESS = "scripted_chat"
_MODEL_PROCESS = "model"
FRONT_DOOR = "front door"


@dataclass(frozen=True)
class HealthCheck:
    """One part of the stack and the URL that answers 200 once it is ready."""

    name: str
    url: str


def stack_environment(
    config: StackConfig, base: Mapping[str, str], *, model_dir: Path | None = None
) -> dict[str, str]:
    """The environment every process of the stack starts with.

    Parameters
    ----------
    config
        The stack's settings.
    base
        The environment to extend, normally ``os.environ``.
    model_dir
        The converted local model directory that the shared model server loads; without it,
        the environment suits the set-up steps that run before the model is converted.

    Returns
    -------
    dict
        ``base`` plus the import path, offline model switches, dummy AWS credentials, the
        front door's ``CHATBOT_*`` settings and the ports that ``local/Procfile`` expands.
    """
    env = dict(base)
    env.update(
        {
            "PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "AWS_ACCESS_KEY_ID": LOCAL_AWS_KEY,
            "AWS_SECRET_ACCESS_KEY": LOCAL_AWS_KEY,
            "AWS_SESSION_TOKEN": LOCAL_AWS_KEY,
            "AWS_DEFAULT_REGION": config.region,
            "AWS_REGION": config.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon locally
            "CHATBOT_CHAT_ENDPOINT": config.chat_endpoint,
            "CHATBOT_MODERATION_ENDPOINT": config.moderation_endpoint,
            "CHATBOT_SESSION_TABLE": config.table_name,
            "CHATBOT_SAGEMAKER_ENDPOINT_URL": config.emulator_url,
            "CHATBOT_DYNAMODB_ENDPOINT_URL": config.dynamodb_url,
            "CHATBOT_REGION": config.region,
            "CHATBOT_WAKE_RETRY_AFTER_S": str(config.wake_retry_after_s),
            "SAGEMAKER_EMULATOR_WAKE_AFTER_S": str(config.wake_after_s),
            "STACK_HOST": config.host,
            "FRONT_DOOR_PORT": str(config.front_door_port),
            "EMULATOR_PORT": str(config.emulator_port),
            "DYNAMODB_PORT": str(config.dynamodb_port),
            "CHAT_PORT": str(config.chat_port),
            "MODERATION_PORT": str(config.moderation_port),
            "MODEL_BACKEND_PORT": str(config.model_backend_port),
            "SCRIPTED_BACKEND_PORT": str(config.scripted_backend_port),
            "SCRIPTED_CHAT_PORT": str(config.scripted_chat_port),
            "CHAT_BACKEND_URL": chat_backend_url(config),
            "CHAT_SCRIPT": str(config.chat_script),
            "MODERATION_BACKEND_URL": moderation_backend_url(config),
            "CHAT_ENDPOINT": config.chat_endpoint,
            "MODERATION_ENDPOINT": config.moderation_endpoint,
            "MODERATION_SCRIPT": str(config.moderation_script),
            # The scripted backend takes vLLM's choice list as production does; `transformers
            # serve` refuses the field, so the small model's free text is parsed instead.
            "MODERATION_DECODING": "choice"
            if config.moderation_backend == "scripted"
            else "free_text",
            # honcho kills what has not stopped 5 s after SIGTERM; drain within that.
            "DRAIN_TIMEOUT_S": "3",
            # The front door's /healthz waits for every other part (front_door_app.py).
            HEALTH_URLS_VARIABLE: json.dumps(
                [check.url for check in health_checks(config) if check.name != FRONT_DOOR]
            ),
        }
    )
    if model_dir is not None:
        # Both containers use the one model server: they render prompts with its tokenizer
        # and name the model as `transformers serve` does, by the directory it loaded.
        # OPTION_MODEL_ID is required by serving.properties and names the same weights.
        for name in ("MODEL_DIR", "OPTION_MODEL_ID", "OPTION_TOKENIZER"):
            env[name] = str(model_dir)
        env["OPTION_SERVED_MODEL_NAME"] = str(model_dir)
    return env


def chat_backend_url(config: StackConfig) -> str:
    """The OpenAI-compatible server behind the chat container."""
    if config.chat_backend == "scripted":
        return config.url(config.scripted_chat_port)
    return config.url(config.model_backend_port)


def uses_model_server(config: StackConfig) -> bool:
    """Whether any role generates with the shared small model (else it is not started)."""
    return config.chat_backend == "model" or config.moderation_backend == "model"


def moderation_backend_url(config: StackConfig) -> str:
    """The OpenAI-compatible server behind the moderation container."""
    if config.moderation_backend == "scripted":
        return config.url(config.scripted_backend_port)
    return config.url(config.model_backend_port)


def convert_model(config: StackConfig, env: Mapping[str, str]) -> Path:
    """Make the shared local model loadable, converting a GGUF once (cached), and return its dir.

    Runs the container's local backend CLI in a subprocess so that the stack process itself
    never imports torch.
    """
    result = subprocess.run(
        [
            *(sys.executable, "-m", "local.model_backend", "--convert-only"),
            *("--model", config.model, "--port", "0"),
        ],
        check=True,
        cwd=REPO_ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(result.stdout.strip().splitlines()[-1]).resolve()


def select_processes(config: StackConfig, procfile: Path = DEFAULT_PROCFILE) -> dict[str, str]:
    """The Procfile's processes that this configuration runs, by name.

    Parameters
    ----------
    config
        The stack's settings; ``moderation_backend`` and ``chat_backend`` pick each role's
        backend, and the model server runs only when a role uses it.
    procfile
        The Procfile to read.

    Returns
    -------
    dict
        Process name to shell command, in Procfile order.
    """
    processes = dict(parse_procfile(procfile.read_text(encoding="utf-8")).processes)
    if config.moderation_backend != "scripted":
        del processes[_SCRIPTED_MODERATION_PROCESS]
    if config.chat_backend != "scripted":
        del processes[_SCRIPTED_CHAT_PROCESS]
    if not uses_model_server(config):
        del processes[_MODEL_PROCESS]
    return processes


def health_checks(config: StackConfig) -> list[HealthCheck]:
    """The HTTP checks that must all answer 200 before the stack is ready (DynamoDB aside)."""
    checks = []
    if uses_model_server(config):
        checks.append(
            HealthCheck("model server", f"{config.url(config.model_backend_port)}/health")
        )
    if config.chat_backend == "scripted":
        checks.append(
            HealthCheck("scripted chat backend", f"{config.url(config.scripted_chat_port)}/health")
        )
    if config.moderation_backend == "scripted":
        checks.append(
            HealthCheck(
                "scripted moderation backend", f"{config.url(config.scripted_backend_port)}/health"
            )
        )
    return [
        *checks,
        HealthCheck("chat container", f"{config.url(config.chat_port)}/ping"),
        HealthCheck("moderation container", f"{config.url(config.moderation_port)}/ping"),
        HealthCheck("SageMaker emulator", f"{config.emulator_url}/ping"),
        HealthCheck(FRONT_DOOR, f"{config.front_door_url}/healthz"),
    ]


def ready_line(config: StackConfig) -> str:
    """The one line that says the stack is up and where each part listens."""
    moderation = (
        f"scripted rules ({config.moderation_script.name})"
        if config.moderation_backend == "scripted"
        else "the local model"
    )
    chat = (
        f" | chat: scripted ({config.chat_script.name})"
        if config.chat_backend == "scripted"
        else ""
    )
    return (
        f"{READY_PREFIX} chat page {config.front_door_url}/"
        f" | OpenAI-compatible API {config.front_door_url}/v1"
        f" | SageMaker runtime emulator {config.emulator_url}"
        f" ({config.chat_endpoint}, {config.moderation_endpoint})"
        f" | DynamoDB {config.dynamodb_url} (table {config.table_name})"
        f" | moderation: {moderation}{chat}"
        " | Ctrl-C stops everything"
    )


def wait_until_ready(
    config: StackConfig, *, is_running: Callable[[], bool], deadline: float
) -> None:
    """Create the session table, then poll every health check until all answer 200.

    Parameters
    ----------
    config
        The stack's settings.
    is_running
        Returns False once the process manager is shutting down, which ends the wait.
    deadline
        ``time.monotonic()`` value after which waiting stops with ``TimeoutError``.

    Raises
    ------
    TimeoutError
        A part did not become healthy before the deadline; the message names it.
    RuntimeError
        The stack stopped while waiting.
    """
    ensure_session_table(
        endpoint_url=config.dynamodb_url,
        table_name=config.table_name,
        region=config.region,
        timeout_s=max(deadline - time.monotonic(), 1.0),
    )
    pending = health_checks(config)
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        while pending:
            if not is_running():
                raise RuntimeError("the stack stopped before it was ready")
            still_pending = []
            for check in pending:
                try:
                    healthy = client.get(check.url).status_code == 200
                except httpx.HTTPError:
                    healthy = False
                if not healthy:
                    still_pending.append(check)
            pending = still_pending
            if pending and time.monotonic() > deadline:
                names = ", ".join(f"{check.name} ({check.url})" for check in pending)
                raise TimeoutError(f"not healthy in time: {names}")
            if pending:
                time.sleep(0.5)


class _StackManager(Manager):  # type: ignore[misc]  # honcho ships no type information
    """honcho's Manager, calling back once every process has been started.

    The readiness thread must start after honcho forked its process workers, never before:
    forking while another thread runs can copy a held lock into the child.
    """

    def __init__(self, on_started: Callable[[], None]) -> None:
        super().__init__()
        self._on_started = on_started

    def _start(self) -> None:
        super()._start()
        self._on_started()

    @property
    def stopping(self) -> bool:
        """True once honcho began terminating the processes."""
        return bool(self._terminating) or self.returncode is not None


def run_stack(config: StackConfig) -> int:
    """Run the local stack in the foreground until Ctrl-C, SIGTERM or a process exits.

    Builds the sample retrieval index if missing, starts every Procfile process under
    honcho, creates the session table, waits for every health check and prints one line
    starting with :data:`READY_PREFIX`.

    Parameters
    ----------
    config
        The stack's settings.

    Returns
    -------
    int
        Exit status: honcho's (130 after Ctrl-C, 143 after SIGTERM), or 1 if the stack never
        became ready (a set-up step failed, or a part was not healthy in time).
    """
    try:
        model_dir = convert_model(config, stack_environment(config, os.environ))
        env = stack_environment(config, os.environ, model_dir=model_dir)
        ensure_sample_index(env, model_id=str(model_dir))
    except subprocess.CalledProcessError as exc:
        command = " ".join(str(part) for part in exc.cmd[1:])
        print(
            f"Local stack failed to start: `{command}` exited with {exc.returncode}",
            file=sys.stderr,
            flush=True,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    failure: list[str] = []

    def become_ready() -> None:
        try:
            wait_until_ready(
                config,
                is_running=lambda: not manager.stopping,
                deadline=time.monotonic() + config.ready_timeout_s,
            )
        except (TimeoutError, RuntimeError) as exc:
            failure.append(str(exc))
            print(f"Local stack failed to start: {exc}", file=sys.stderr, flush=True)
            manager.terminate()
            return
        print(ready_line(config), flush=True)

    manager = _StackManager(
        on_started=lambda: threading.Thread(
            target=become_ready, name="stack-readiness", daemon=True
        ).start()
    )
    for name, command in select_processes(config).items():
        manager.add_process(name, command, env=env, cwd=str(REPO_ROOT))
    manager.loop()
    if failure:
        return 1
    return int(manager.returncode or 0)
