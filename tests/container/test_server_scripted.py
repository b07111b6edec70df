"""The launcher and server over real HTTP against the scripted OpenAI-compatible backend."""

import json
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.container.helpers import (
    CHAT_PROPERTIES,
    MODERATION_PROPERTIES,
    Launched,
    ScriptedBackend,
    start_launcher,
    start_scripted_backend,
    stop_process,
    wait_for,
)
from tests.servers import free_port

pytestmark = pytest.mark.timeout(180)


def _chat_env(smollm2_dir: Path) -> dict[str, str]:
    return {
        "OPTION_MODEL_ID": str(smollm2_dir),
        "OPTION_TOKENIZER": str(smollm2_dir),
        "OPTION_PROMPT_TEMPLATE": "tokenizer",
        # Per environment, as the CDK app sets it from cdk.json.
        "OPTION_MAX_NEW_TOKENS_CAP": "512",
    }


class Stack:
    def __init__(self, chat: Launched, moderation: Launched, backend: ScriptedBackend, first: int):
        self.chat = chat
        self.moderation = moderation
        self.backend = backend
        self.first_ping = first


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, smollm2_dir: Path) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("scripted")
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    chat = start_launcher(logs, CHAT_PROPERTIES, backend_url=backend_url, **_chat_env(smollm2_dir))
    moderation = start_launcher(
        logs, MODERATION_PROPERTIES, backend_url=backend_url, OPTION_MODEL_ID="unused"
    )
    backend: ScriptedBackend | None = None
    try:
        # Nothing listens on the backend port yet: /ping must say 503, not 200.
        wait_for(f"{chat.url}/ping", status=503, timeout_s=120)
        first = httpx.get(f"{chat.url}/ping").status_code
        backend = start_scripted_backend(backend_port)
        wait_for(f"{chat.url}/ping", timeout_s=120)
        wait_for(f"{moderation.url}/ping", timeout_s=120)
        yield Stack(chat, moderation, backend, first)
    finally:
        for launched in (chat, moderation):
            stop_process(launched.process)
        if backend is not None:
            stop_process(backend.process)


def _stream(url: str, body: dict[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
    with httpx.stream("POST", f"{url}/invocations", json=body, timeout=60) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
        return response.status_code, response.headers["content-type"], lines


def test_ping_is_503_until_the_backend_answers_then_200(stack: Stack) -> None:
    assert stack.first_ping == 503
    assert httpx.get(f"{stack.chat.url}/ping").json() == {"status": "healthy", "role": "chat"}


def test_stream_relays_tokens_then_final_object(stack: Stack) -> None:
    stack.backend.script({"default": {"response": "A data engineer builds reliable pipelines."}})
    status, content_type, lines = _stream(
        stack.chat.url,
        {"inputs": "Which keys does the session table use?", "stream": True},
    )
    assert status == 200
    assert content_type.startswith("application/jsonlines")
    tokens = [line["token"]["text"] for line in lines[:-1]]
    assert tokens == ["A", " data", " engineer", " builds", " reliable", " pipelines."]
    final = lines[-1]
    assert final["generated_text"] == "".join(tokens)
    details = final["details"]
    assert details["finish_reason"] == "stop"
    assert details["generated_tokens"] == 6
    assert details["prompt_tokens"] > 20
    assert details["sources"][0]["id"].startswith("interfaces.md#")
    assert set(details["sources"][0]) == {"id", "title", "score"}


def test_non_streaming_and_no_retrieval(stack: Stack) -> None:
    stack.backend.script({"default": {"response": "Short answer."}})
    response = httpx.post(
        f"{stack.chat.url}/invocations",
        json={
            "inputs": [{"role": "user", "content": "Which keys does the session table use?"}],
            "parameters": {"no_retrieval": True, "max_new_tokens": 16, "temperature": 0},
        },
        timeout=60,
    )
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "generated_text": "Short answer.",
        "details": {
            "finish_reason": "stop",
            "prompt_tokens": body["details"]["prompt_tokens"],
            "generated_tokens": 2,
            "sources": [],
        },
    }
    sent = httpx.get(f"{stack.backend.url}/_stats").json()["last_requests"][-1]["body"]
    assert sent["max_tokens"] == 16
    assert "Which keys does the session table use?" in sent["prompt"]
    assert "[1]" not in sent["prompt"]


@pytest.mark.parametrize("mode", ["disconnect", "error_event"])
def test_backend_failure_mid_stream_ends_with_an_error_line(stack: Stack, mode: str) -> None:
    stack.backend.script(
        {
            "default": {
                "response": "one two three four five",
                "fail_after_tokens": 2,
                "fail_mode": mode,
            }
        }
    )
    status, _, lines = _stream(stack.chat.url, {"inputs": "hi", "stream": True})
    assert status == 200
    assert [line["token"]["text"] for line in lines[:-1]] == ["one", " two"]
    assert lines[-1]["error"]["type"] == "backend_error"
    assert "generated_text" not in lines[-1]


def test_backend_refusal_before_streaming_is_an_http_error(stack: Stack) -> None:
    stack.backend.script({"default": {"http_status": 500, "error_message": "engine dead"}})
    response = httpx.post(
        f"{stack.chat.url}/invocations", json={"inputs": "hi", "stream": True}, timeout=30
    )
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "backend_error"
    assert "engine dead" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ("{not json", 400, "not valid JSON"),
        ({"parameters": {}}, 400, "inputs"),
        ({"inputs": 42}, 400, "inputs"),
        ({"inputs": ""}, 400, "inputs"),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": [{"role": "robot", "content": "x"}]}, 400, "role"),
        ({"inputs": [{"role": "assistant", "content": "x"}]}, 400, "last message"),
        ({"inputs": "x", "parameters": {"temperature": "hot"}}, 400, "temperature"),
        ({"inputs": "x", "parameters": {"top_p": 1.5}}, 400, "top_p"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 0}}, 400, "max_new_tokens"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 513}}, 400, "at most 512"),
        ({"inputs": "x", "parameters": {"beam_width": 3}}, 400, "beam_width"),
        ({"inputs": "x", "stream": "maybe"}, 400, "stream"),
        ({"inputs": "word " * 2500}, 413, "context window"),
    ],
)
def test_bad_input_is_a_4xx_envelope(stack: Stack, body: Any, status: int, fragment: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    for stream in (False, True):
        if stream and isinstance(body, dict):
            content = json.dumps({**body, "stream": body.get("stream", True)})
        response = httpx.post(
            f"{stack.chat.url}/invocations",
            content=content,
            headers={"content-type": "application/json"},
            timeout=30,
        )
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        error = response.json()["error"]
        assert fragment in error["message"]
        assert error["type"] in ("invalid_request", "context_length_exceeded")
    if status == 413:
        assert error["max_model_len"] == 2048
        assert error["prompt_tokens"] + error["max_new_tokens"] > 2048


def test_unknown_path_uses_the_envelope(stack: Stack) -> None:
    response = httpx.get(f"{stack.chat.url}/nope")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"


def test_sixteen_concurrent_streams_all_complete(stack: Stack) -> None:
    words = [f"w{n}" for n in range(8)]
    stack.backend.script(
        {
            "default": {
                "response": " ".join(words),
                # Each answer waits until all sixteen are open at once (no timing assumption:
                # under a loaded CPU the requests may arrive seconds apart).
                "barrier": 16,
                "barrier_timeout_s": 60.0,
                "token_delay_s": 0.02,
            }
        }
    )
    httpx.delete(f"{stack.backend.url}/_stats")

    def one(n: int) -> list[dict[str, Any]]:
        return _stream(
            stack.chat.url,
            {"inputs": f"question {n}", "parameters": {"no_retrieval": True}, "stream": True},
        )[2]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(16)))
    for lines in results:
        assert lines[-1]["generated_text"] == " ".join(words)
        assert "".join(line["token"]["text"] for line in lines[:-1]) == " ".join(words)
    stats = httpx.get(f"{stack.backend.url}/_stats").json()
    # All sixteen were open on the backend at once: nothing in our server serialises them.
    assert stats["max_active_streams"] == 16


def test_moderation_labels_follow_the_scripted_backend(stack: Stack) -> None:
    script = {
        "rules": [
            {"contains": "Input: ALPHA text\nOutput:", "response": " casual\nInput: x"},
            {"contains": "Input: BRAVO text\nOutput:", "response": " Needs Caution"},
            {"contains": "Input: CHARLIE text\nOutput:", "response": " possibly needs caution"},
        ],
        "default": {"response": " I cannot say"},
    }
    stack.backend.script(script)
    url = f"{stack.moderation.url}/invocations"
    single = httpx.post(url, json={"inputs": "ALPHA text"}, timeout=30)
    assert single.json() == {"label": "casual", "labels": ["casual"]}
    batch = httpx.post(url, json={"inputs": ["ALPHA text", "CHARLIE text", "BRAVO text"]})
    assert batch.json() == {
        "label": "needs caution",
        "labels": ["casual", "possibly needs caution", "needs caution"],
    }
    unparseable = httpx.post(url, json={"inputs": "DELTA text"}, timeout=30)
    assert unparseable.json()["label"] == "needs intervention"
    sent = httpx.get(f"{stack.backend.url}/_stats").json()["last_requests"][-1]["body"]
    assert sent["temperature"] == 0.0
    assert sent["prompt"].endswith("Input: DELTA text\nOutput:")
    bad_bodies: list[dict[str, Any]] = [
        {"inputs": []},
        {"inputs": 3},
        {"text": "x"},
        {"inputs": ["x"] * 33},
    ]
    for bad in bad_bodies:
        response = httpx.post(url, json=bad, timeout=30)
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request"


def test_sigterm_during_a_stream_lets_it_finish(
    stack: Stack, tmp_path: Path, smollm2_dir: Path
) -> None:
    words = [f"t{n}" for n in range(10)]
    stack.backend.script({"default": {"response": " ".join(words), "token_delay_s": 0.3}})
    # No retriever: this launcher only needs to start quickly.
    launched = start_launcher(
        tmp_path,
        CHAT_PROPERTIES,
        backend_url=stack.backend.url,
        OPTION_RETRIEVER="none",
        **_chat_env(smollm2_dir),
    )
    try:
        wait_for(f"{launched.url}/ping", timeout_s=120)
        received: list[dict[str, Any]] = []
        first_token = threading.Event()

        def consume() -> None:
            body = {"inputs": "x", "parameters": {"no_retrieval": True}, "stream": True}
            with httpx.stream("POST", f"{launched.url}/invocations", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        received.append(json.loads(line))
                        first_token.set()

        reader = threading.Thread(target=consume)
        reader.start()
        assert first_token.wait(30)
        launched.process.send_signal(signal.SIGTERM)
        reader.join(60)
        assert received[-1]["generated_text"] == " ".join(words)
        assert launched.process.wait(60) == 0
    finally:
        stop_process(launched.process)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{launched.url}/ping")
