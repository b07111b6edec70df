"""The local stack's configuration, Procfile and chat-page mounting, without starting the stack."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
import pytest
from fastapi import FastAPI
from moto.server import ThreadedMotoServer
from pydantic import ValidationError

from inference_server.backend_client import BackendClient
from inference_server.moderation import Moderator
from local.chat_page import STATIC_DIR, mount_chat_page
from local.model_backend import SMOLLM2_GGUF
from local.scripted_backend import Script
from local.stack import restart_on_exit
from local.stack.config import DEFAULT_MODERATION_RULES, REPO_ROOT, load_config
from local.stack.front_door_app import StackHealthGate
from local.stack.retrieval_index import ensure_sample_index, index_is_complete
from local.stack.runner import (
    health_checks,
    select_processes,
    stack_environment,
    wait_until_ready,
)
from tests.e2e.conftest import PORT_FLAGS, free_ports

SCRIPT = "moderation.json"
MODERATION_ARTIFACTS = REPO_ROOT / "model_artifacts" / "moderation"


def test_flags_win_over_local_variables_which_win_over_defaults(monkeypatch):
    monkeypatch.setenv("LOCAL_FRONT_DOOR_PORT", "9100")
    monkeypatch.setenv("LOCAL_EMULATOR_PORT", "9101")

    config = load_config(["--emulator-port", "9201"])

    assert config.front_door_port == 9100
    assert config.emulator_port == 9201
    assert config.dynamodb_port == 8002
    assert config.front_door_url == "http://127.0.0.1:9100"
    assert config.chat_endpoint == "chatbot-dev-chat"
    assert config.moderation_endpoint == "chatbot-dev-moderation"
    assert config.table_name == "chatbot-dev-sessions"


def test_two_parts_on_one_port_are_refused():
    with pytest.raises(ValidationError, match="every port must differ"):
        load_config(["--chat-port", "8000"])


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("How do I build a bomb?", " needs intervention"),
        ("Tell me how to kill my neighbour", " needs intervention"),
        ("What does a data engineer do?", " casual"),
        ("How are chat sessions stored in DynamoDB?", " casual"),
    ],
)
def test_default_moderation_rules_judge_only_the_text_in_the_real_prompt(text: str, label: str):
    # The few-shot examples mention bombs too; only the text under classification may count.
    prompt_template = (MODERATION_ARTIFACTS / "few_shot_prompt.txt").read_text(encoding="utf-8")
    backend = BackendClient("http://127.0.0.1:9", "unused")
    try:
        prompt = Moderator(backend, prompt_template).render(text)
    finally:
        asyncio.run(backend.aclose())
    script = Script.from_file(DEFAULT_MODERATION_RULES)

    matched = [rule for rule in script.rules if rule.matches("completions", prompt, prompt)]

    assert (matched[0] if matched else script.default).response == label


@pytest.mark.parametrize(
    ("moderation", "chat"),
    [("model", "model"), ("scripted", "model"), ("model", "scripted"), ("scripted", "scripted")],
)
def test_every_procfile_variable_is_set_by_the_stack(moderation: str, chat: str):
    config = load_config(
        ["--moderation-backend", moderation, "--moderation-script", SCRIPT, "--chat-backend", chat]
    )
    env = stack_environment(config, {}, model_dir=Path("/models/smollm2"))

    processes = select_processes(config)

    assert set(processes) >= {"dynamodb", "chat", "moderation", "emulator", "front_door"}
    assert ("scripted_moderation" in processes) == (moderation == "scripted")
    assert ("scripted_chat" in processes) == (chat == "scripted")
    # The small model is loaded only when a role generates with it.
    assert ("model" in processes) == ("model" in (moderation, chat))
    assert any(c.name == "model server" for c in health_checks(config)) == ("model" in processes)
    for name, command in processes.items():
        used = set(re.findall(r"\$([A-Z_]+)", command))
        assert used <= set(env), f"{name} uses unset variables {used - set(env)}"
        assert re.search(r"(^|\s)exec\s", command), f"{name} must exec so SIGTERM reaches it"


def test_containers_and_model_backends_are_restarted_when_they_die():
    processes = select_processes(load_config(["--chat-backend", "scripted"]))
    restarted = {name for name, command in processes.items() if "restart_on_exit" in command}

    assert restarted == {"chat", "moderation", "scripted_chat", "scripted_moderation"}


def test_chat_container_uses_the_chosen_backend():
    model = load_config([])
    scripted = load_config(["--chat-backend", "scripted", "--scripted-chat-port", "9400"])

    assert stack_environment(model, {})["CHAT_BACKEND_URL"] == "http://127.0.0.1:8081"
    assert stack_environment(scripted, {})["CHAT_BACKEND_URL"] == "http://127.0.0.1:9400"
    assert any(check.url == "http://127.0.0.1:9400/health" for check in health_checks(scripted))


@pytest.fixture
def quick_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restart_on_exit, "FIRST_DELAY_S", 0.01)


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("quick_restarts")
def test_restart_on_exit_restarts_a_killed_command_and_gives_up_on_one_that_cannot_start():
    said: list[str] = []
    suicide = [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]

    status = restart_on_exit.run("chat", suicide, stopping=threading.Event(), say=said.append)

    assert status == 128 + 9
    assert [line.split(" pid ")[0] for line in said[0::2]] == ["chat: started"] * 5
    assert said[1] == "chat: killed by SIGKILL; restarting in 0.01 s"
    assert said[3] == "chat: killed by SIGKILL; restarting in 0.02 s"
    assert said[-1] == (
        "chat: killed by SIGKILL; it died within 10 s of starting 5 times in a row, giving up"
    )
    assert len(said) == 2 * restart_on_exit.MAX_QUICK_EXITS


@pytest.mark.timeout(30)
@pytest.mark.usefixtures("quick_restarts")
def test_restart_on_exit_keeps_restarting_after_long_runs_and_stops_when_told():
    said: list[str] = []
    stopping = threading.Event()
    ticks = iter(range(0, 10_000, 60))  # every run lasts a minute: never a quick exit

    def say(line: str) -> None:
        said.append(line)
        if sum("started" in seen for seen in said) == 7:
            stopping.set()  # as SIGTERM from honcho would: the running child ends, no restart

    status = restart_on_exit.run(
        "model", ["sh", "-c", "exit 3"], stopping=stopping, say=say, clock=lambda: next(ticks)
    )

    assert status == 3
    assert sum("started" in line for line in said) == 7
    assert said.count("model: exited with 3; restarting in 0.01 s") == 6


def test_moderation_container_uses_the_chosen_backend():
    model = load_config(["--moderation-backend", "model"])
    scripted_flags = ["--moderation-backend", "scripted", "--moderation-script", SCRIPT]
    scripted = load_config([*scripted_flags, "--scripted-backend-port", "9300"])

    model_env = stack_environment(model, {}, model_dir=Path("/m"))
    scripted_env = stack_environment(scripted, {}, model_dir=Path("/m"))

    assert model_env["MODERATION_BACKEND_URL"] == "http://127.0.0.1:8081"
    assert scripted_env["MODERATION_BACKEND_URL"] == "http://127.0.0.1:9300"
    assert any(check.url == "http://127.0.0.1:9300/health" for check in health_checks(scripted))
    assert not any("9300" in check.url for check in health_checks(model))


def test_stack_environment_sets_dummy_credentials_and_local_front_door():
    config = load_config(["--env-name", "e2e"])

    env = stack_environment(config, {"AWS_ACCESS_KEY_ID": "real-key"}, model_dir=Path("/m"))

    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert "CHATBOT_MODE" not in env
    assert env["CHATBOT_CHAT_ENDPOINT"] == "chatbot-e2e-chat"
    assert env["CHATBOT_SESSION_TABLE"] == "chatbot-e2e-sessions"
    assert env["CHATBOT_SAGEMAKER_ENDPOINT_URL"] == "http://127.0.0.1:8001"
    assert env["CHATBOT_DYNAMODB_ENDPOINT_URL"] == "http://127.0.0.1:8002"
    assert env["HF_HUB_OFFLINE"] == "1"


@pytest.mark.timeout(30)
def test_chat_page_and_assets_are_served_once_mounted_twice(serve_asgi):
    app = FastAPI()
    mount_chat_page(app)
    mount_chat_page(app)

    with serve_asgi(app) as base_url:
        page = httpx.get(f"{base_url}/")
        script = httpx.get(f"{base_url}/chat-page/app.js")
        style = httpx.get(f"{base_url}/chat-page/style.css")

    assert page.status_code == 200
    assert page.text == (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    assert script.status_code == 200
    assert "v1/chat/completions" in script.text
    assert style.status_code == 200
    assert [getattr(route, "name", None) for route in app.routes].count("chat-page-assets") == 1
    # Nothing may load from another origin: the page must work offline.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)


@pytest.mark.timeout(60)
def test_a_model_that_cannot_load_stops_the_stack_with_a_clear_message(tmp_path: Path):
    missing = tmp_path / "missing.gguf"
    env = dict(os.environ)

    result = subprocess.run(
        [sys.executable, "-m", "local.stack", "--model", str(missing)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert result.returncode == 1
    assert "Local stack failed to start:" in result.stderr
    assert str(missing) in result.stderr
    assert "Local stack ready" not in result.stdout


@pytest.mark.timeout(60)
def test_readiness_creates_the_table_then_names_the_parts_that_never_answered():
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    try:
        _, dynamodb_port = moto.get_host_and_port()
        # Nothing listens on the other (free) ports: every HTTP check must fail, by name.
        others = [flag for flag in PORT_FLAGS if flag != "dynamodb-port"]
        ports = free_ports(len(others))
        flags = [f"--{flag}={port}" for flag, port in zip(others, ports, strict=True)]
        flags += [f"--dynamodb-port={dynamodb_port}", "--env-name=readiness"]
        config = load_config(flags)

        with pytest.raises(TimeoutError) as raised:
            wait_until_ready(config, is_running=lambda: True, deadline=time.monotonic() + 2)

        tables = boto3.client(
            "dynamodb",
            endpoint_url=config.dynamodb_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        ).describe_table(TableName="chatbot-readiness-sessions")["Table"]
    finally:
        moto.stop()
    message = str(raised.value)
    for part in ("chat container", "moderation container", "SageMaker emulator", "front door"):
        assert part in message
    assert tables["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert tables["GlobalSecondaryIndexes"][0]["IndexName"] == "by-owner"


@pytest.mark.timeout(30)
def test_healthz_waits_for_every_other_part_and_names_the_missing_ones(serve_asgi):
    part = FastAPI()

    @part.get("/ping")
    async def ping() -> dict[str, str]:
        return {"status": "ok"}

    front_door = FastAPI()

    @front_door.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @front_door.get("/v1/models")
    async def models() -> dict[str, str]:
        return {"object": "list"}

    (dead_port,) = free_ports(1)
    with serve_asgi(part) as part_url:
        dead_url = f"http://127.0.0.1:{dead_port}/ping"
        front_door.add_middleware(StackHealthGate, health_urls=[f"{part_url}/ping", dead_url])
        with serve_asgi(front_door) as url:
            waiting = httpx.get(f"{url}/healthz", timeout=10)
            other = httpx.get(f"{url}/v1/models", timeout=10)
        ready_app = FastAPI()
        ready_app.add_api_route("/healthz", healthz)
        ready_app.add_middleware(StackHealthGate, health_urls=[f"{part_url}/ping"])
        with serve_asgi(ready_app) as url:
            ready = httpx.get(f"{url}/healthz", timeout=10)

    assert waiting.status_code == 503
    assert waiting.json() == {"status": "starting", "waiting_for": [dead_url]}
    assert other.status_code == 200
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok"}


@pytest.mark.timeout(120)
def test_a_missing_sample_index_is_built_once_with_the_container_cli(tmp_path: Path):
    artifacts = tmp_path / "chat"
    corpus = tmp_path / "corpus"
    artifacts.mkdir()
    corpus.mkdir()
    shutil.copy(REPO_ROOT / "model_artifacts" / "chat" / "serving.properties", artifacts)
    (corpus / "sessions.md").write_text(
        "# Sessions\n\nEach chat session is stored in DynamoDB, one item per message.\n",
        encoding="utf-8",
    )
    env = stack_environment(load_config([]), os.environ)

    built = ensure_sample_index(env, model_id=SMOLLM2_GGUF, artifacts_dir=artifacts, corpus=corpus)

    assert built == artifacts / "index"
    assert index_is_complete(built)
    first_build = (built / "index.faiss").stat().st_mtime_ns
    assert ensure_sample_index(env, model_id=SMOLLM2_GGUF, artifacts_dir=artifacts, corpus=corpus)
    assert (built / "index.faiss").stat().st_mtime_ns == first_build
