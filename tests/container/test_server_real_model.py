"""The launcher in local mode with the real SmolLM2 model behind `transformers serve`."""

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatbot_contracts.moderation import MODERATION_LABELS
from tests.container.helpers import (
    CHAT_PROPERTIES,
    MODERATION_PROPERTIES,
    Launched,
    start_launcher,
    stop_process,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def _children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            found.append((int(entry.name), cmdline))
    return found


class RealStack:
    def __init__(self, chat: Launched, moderation: Launched, first_ping: int, backend_pid: int):
        self.chat = chat
        self.moderation = moderation
        self.first_ping = first_ping
        self.backend_pid = backend_pid


def _first_answer(launched: Launched) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            return httpx.get(f"{launched.url}/ping", timeout=2).status_code
        except httpx.HTTPError:
            if launched.process.poll() is not None:
                raise RuntimeError(launched.log_text()) from None
            time.sleep(0.1)
    raise TimeoutError("launcher never answered")


def _backend_child(launched: Launched) -> tuple[int, str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        children = [c for c in _children(launched.process.pid) if "local.model_backend" in c[1]]
        if children:
            pid, cmdline = children[0]
            return pid, "http://127.0.0.1:" + cmdline.split("--port ")[1].split()[0]
        time.sleep(0.1)
    raise TimeoutError(launched.log_text())


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[RealStack]:
    logs = tmp_path_factory.mktemp("real")
    chat = start_launcher(
        logs,
        CHAT_PROPERTIES,
        backend="vllm",
        OPTION_MODEL_ID=str(smollm2_dir),
        OPTION_SERVED_MODEL_NAME=str(smollm2_dir),
        OPTION_PROMPT_TEMPLATE="tokenizer",
        OPTION_STOP_WORDS="[]",
        # One passage keeps the CPU prefill short; ranking is tested with top-3 elsewhere.
        OPTION_RETRIEVAL_TOP_K="1",
    )
    moderation: Launched | None = None
    try:
        backend_pid, backend_url = _backend_child(chat)
        # The moderation role shares the chat launcher's backend (one model load per session).
        moderation = start_launcher(
            logs,
            MODERATION_PROPERTIES,
            backend_url=backend_url,
            OPTION_MODEL_ID="unused",
            OPTION_SERVED_MODEL_NAME=str(smollm2_dir),
        )
        first_ping = _first_answer(chat)
        wait_for(f"{chat.url}/ping", timeout_s=240)
        wait_for(f"{moderation.url}/ping", timeout_s=240)
        yield RealStack(chat, moderation, first_ping, backend_pid)
    finally:
        stop_process(chat.process)
        if moderation is not None:
            stop_process(moderation.process)


def test_ping_is_503_while_loading_then_200(real: RealStack) -> None:
    assert real.first_ping == 503
    assert httpx.get(f"{real.chat.url}/ping").status_code == 200


def test_streamed_chat_with_the_real_model(real: RealStack) -> None:
    body = {
        "inputs": [{"role": "user", "content": "Say hello."}],
        "parameters": {"max_new_tokens": 6, "temperature": 0, "no_retrieval": True},
        "stream": True,
    }
    with httpx.stream("POST", f"{real.chat.url}/invocations", json=body, timeout=120) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    tokens = [line["token"]["text"] for line in lines[:-1]]
    assert len(tokens) >= 2
    final = lines[-1]
    assert final["generated_text"] == "".join(tokens)
    assert final["details"]["finish_reason"] in ("length", "stop")
    assert 2 <= final["details"]["generated_tokens"] <= 6
    assert final["details"]["sources"] == []


def test_retrieval_with_the_real_model(real: RealStack) -> None:
    body = {
        "inputs": "Which DynamoDB keys does the session table use?",
        "parameters": {"max_new_tokens": 1, "temperature": 0},
    }
    response = httpx.post(f"{real.chat.url}/invocations", json=body, timeout=120)
    assert response.status_code == 200, response.text
    result = response.json()
    (source,) = result["details"]["sources"]
    assert source["id"].startswith("interfaces.md#")
    assert "Session table" in source["title"]
    assert isinstance(result["generated_text"], str)


def test_moderation_with_the_real_model_gives_valid_labels(real: RealStack) -> None:
    response = httpx.post(
        f"{real.moderation.url}/invocations", json={"inputs": "What time is it?"}, timeout=120
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["labels"][0] in MODERATION_LABELS
    assert result["label"] == result["labels"][0]


def test_backend_death_fails_ping_and_exits_non_zero(real: RealStack) -> None:
    os.kill(real.backend_pid, signal.SIGKILL)
    code = real.chat.process.wait(timeout=60)
    assert code != 0
    assert "backend exited" in real.chat.log_text()
