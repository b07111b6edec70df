"""Settings of the local stack: ports, names and backends, from flags, then LOCAL_* variables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from local.model_backend import SMOLLM2_GGUF

# What generates for a role: the shared small model, or local.scripted_backend.
RoleBackend = Literal["model", "scripted"]
Port = Annotated[int, Field(ge=1, le=65535)]

PORT_FIELDS = (
    "front_door_port",
    "emulator_port",
    "dynamodb_port",
    "chat_port",
    "moderation_port",
    "model_backend_port",
    "scripted_backend_port",
    "scripted_chat_port",
)

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root: every process of the stack runs there."""

DEFAULT_PROCFILE = Path(__file__).resolve().parent.parent / "Procfile"

DEFAULT_MODERATION_RULES = Path(__file__).resolve().parent / "moderation_rules.json"
"""Keyword rules the scripted moderation backend answers with when no script is given."""

DEFAULT_CHAT_SCRIPT = Path(__file__).resolve().parent / "chat_script.json"
"""What the scripted chat backend answers when no script is given (one fixed reply)."""

HEALTH_URLS_VARIABLE = "STACK_HEALTH_URLS"
"""JSON list of the other parts' health URLs, set by the stack for the front-door process."""

LOCAL_AWS_KEY = "testing"
"""Access key id, secret and session token of every boto3 client in the stack: the local
servers accept any, and dummy ones keep a developer's real credentials out of play."""


class StackConfig(BaseSettings):
    """Everything that varies between two runs of the local stack.

    Resolution order for each field: command-line flag, then ``LOCAL_<FIELD>`` environment
    variable, then the default below. A bad value stops the stack with a message naming it.
    """

    model_config = SettingsConfigDict(env_prefix="LOCAL_", frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    front_door_port: Port = 8000
    emulator_port: Port = 8001
    dynamodb_port: Port = 8002
    chat_port: Port = 8080
    moderation_port: Port = 8090
    model_backend_port: Port = 8081
    scripted_backend_port: Port = 8091
    scripted_chat_port: Port = 8092
    env_name: str = Field(default="dev", pattern=r"^[a-z0-9-]+$")
    session_table: str | None = Field(
        default=None, description="defaults to chatbot-<env_name>-sessions"
    )
    # Scripted by default: SmolLM2-135M copies the few-shot prompt's last label, so as the
    # classifier it refuses nearly every question; `model` runs it anyway.
    moderation_backend: RoleBackend = "scripted"
    moderation_script: Path = DEFAULT_MODERATION_RULES
    # The real small model by default; `scripted` answers from a script, fast and exactly
    # (load and fault tests), through the same chat container.
    chat_backend: RoleBackend = "model"
    chat_script: Path = DEFAULT_CHAT_SCRIPT
    model: str = Field(
        default=SMOLLM2_GGUF,
        description="what the one local model server loads for both roles (dir, .gguf, package:)",
    )
    ready_timeout_s: float = Field(default=300.0, gt=0)
    region: str = "us-east-1"
    # Scale to zero, emulated: a model put to sleep (emulator's PUT /_capacity) serves again
    # this long after the first refused request; the front door says when to come back.
    wake_after_s: float = Field(default=20.0, ge=0)
    wake_retry_after_s: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _ports_differ(self) -> StackConfig:
        ports = {field: getattr(self, field) for field in PORT_FIELDS}
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"every port must differ: {ports}")
        return self

    @property
    def table_name(self) -> str:
        """The session table the stack creates and the front door uses."""
        return self.session_table or f"chatbot-{self.env_name}-sessions"

    @property
    def chat_endpoint(self) -> str:
        """SageMaker endpoint name of the chat role (docs/interfaces.md)."""
        return f"chatbot-{self.env_name}-chat"

    @property
    def moderation_endpoint(self) -> str:
        """SageMaker endpoint name of the moderation role."""
        return f"chatbot-{self.env_name}-moderation"

    def url(self, port: int) -> str:
        """The loopback URL of one of the stack's ports."""
        return f"http://{self.host}:{port}"

    @property
    def front_door_url(self) -> str:
        """Where the chat page and the OpenAI-compatible API are served."""
        return self.url(self.front_door_port)

    @property
    def emulator_url(self) -> str:
        """The SageMaker runtime emulator (boto3 ``endpoint_url``)."""
        return self.url(self.emulator_port)

    @property
    def dynamodb_url(self) -> str:
        """The DynamoDB-compatible server (boto3 ``endpoint_url``)."""
        return self.url(self.dynamodb_port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.stack",
        description=(
            "Run the whole chatbot on this machine: DynamoDB (moto), chat and moderation "
            "containers with small real models, the SageMaker runtime emulator and the front "
            "door with its chat page. Every flag also reads LOCAL_<NAME> from the environment."
        ),
    )
    parser.add_argument("--host", help="loopback address every server binds (127.0.0.1)")
    for field in PORT_FIELDS:
        parser.add_argument(f"--{field.replace('_', '-')}", type=int, metavar="PORT")
    parser.add_argument("--env-name", help="endpoint names are chatbot-<env>-chat|moderation")
    parser.add_argument("--session-table", help="DynamoDB table the stack creates and uses")
    parser.add_argument(
        "--moderation-backend",
        choices=get_args(RoleBackend),
        help="scripted (default): keyword rules served by local.scripted_backend; model: the "
        "shared small model classifies (SmolLM2-135M labels nearly everything 'needs "
        "intervention')",
    )
    parser.add_argument(
        "--moderation-script",
        type=Path,
        help="Script JSON for the scripted moderation backend (default: local/stack/"
        "moderation_rules.json, which flags a few harmful keywords)",
    )
    parser.add_argument(
        "--chat-backend",
        choices=get_args(RoleBackend),
        help="model (default): the shared small model generates; scripted: local.scripted_backend "
        "answers from --chat-script (exact, fast answers for load and fault tests)",
    )
    parser.add_argument(
        "--chat-script",
        type=Path,
        help="Script JSON for the scripted chat backend (default: local/stack/chat_script.json)",
    )
    parser.add_argument(
        "--model", help="model both roles share: a dir, a .gguf or package:<pkg>/<file>"
    )
    parser.add_argument("--ready-timeout-s", type=float, help="give up if not ready by then")
    parser.add_argument(
        "--wake-after-s", type=float, help="a sleeping model wakes this long after a request"
    )
    parser.add_argument(
        "--wake-retry-after-s", type=int, help="Retry-After the front door sends meanwhile"
    )
    return parser


def load_config(argv: Sequence[str] | None = None) -> StackConfig:
    """Resolve the stack's settings from flags, then ``LOCAL_*`` variables, then defaults.

    Parameters
    ----------
    argv
        Command-line arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    StackConfig
        The validated settings.
    """
    args = vars(_parser().parse_args(argv))
    # Flags are init arguments, which pydantic-settings ranks above the environment.
    return StackConfig(**{field: value for field, value in args.items() if value is not None})
