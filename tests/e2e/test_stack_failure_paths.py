"""Failure paths and load through the whole local stack, its chat role on the scripted backend.

The stack is ``python -m local.stack --chat-backend scripted`` (what ``make local
LOCAL_ARGS="--chat-backend scripted"`` runs): the real front door, emulator, chat and moderation
containers and DynamoDB server as separate processes; only the chat model's answers are
scripted, so they are exact and arrive as fast or as slowly as a test needs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from tests.e2e.conftest import LocalStack, start_local_stack

pytestmark = pytest.mark.timeout(180)

KILL_QUESTION = "stream slowly until the container dies"
SLOW_TOKENS = [f" w{i}" for i in range(200)]
"""The killed turn's answer: 200 tokens at 50 ms each, ten seconds that the kill cuts short."""
TOKENS_BEFORE_KILL = 5
SESSIONS = 100
TURNS = 5
ANSWERS = 64
RESTART_TIMEOUT_S = 60


def _end_of_prompt(question: str) -> str:
    # SmolLM2's chat template (the chat role renders prompts with the model's tokenizer).
    return rf"{question}<\|im_end\|>\s*<\|im_start\|>assistant\s*$"


def chat_script() -> dict[str, Any]:
    """Answers keyed by the last user message: ``question-NN`` → ``answer-NN``, and a slow one."""
    rules: list[dict[str, Any]] = [
        {
            "name": "slow",
            "regex": _end_of_prompt(KILL_QUESTION),
            "scope": "all",
            "tokens": SLOW_TOKENS,
            "token_delay_s": 0.05,
        }
    ]
    rules += [
        {
            "name": f"question-{i:02d}",
            "regex": _end_of_prompt(f"question-{i:02d}"),
            "scope": "all",
            "response": f"answer-{i:02d}",
        }
        for i in range(ANSWERS)
    ]
    return {"model": "scripted-chat", "rules": rules, "default": {"response": "unscripted"}}


@pytest.fixture(scope="module")
def scripted_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The local stack with the scripted chat backend, for this module only."""
    script = tmp_path_factory.mktemp("chat-script") / "chat_script.json"
    script.write_text(json.dumps(chat_script()), encoding="utf-8")
    # No retrieval: nothing here asks for sources, and the chat container then starts (and
    # restarts after the kill) without loading the embedding model.
    stack, where = start_local_stack(
        tmp_path_factory,
        "e2e-scripted",
        "--chat-backend",
        "scripted",
        "--chat-script",
        str(script),
        environment={"OPTION_RETRIEVER": "none"},
    )
    try:
        yield where
    finally:
        stack.stop()


def _process_tree(root: int) -> dict[int, list[str]]:
    """Command line of ``root`` and of every process descending from it, from /proc."""
    children: dict[int, list[int]] = defaultdict(list)
    commands: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="utf-8")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # exited meanwhile
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children[parent].append(int(entry.name))
        commands[int(entry.name)] = [part.decode(errors="replace") for part in argv if part]
    tree: dict[int, list[str]] = {}
    pending = [root]
    while pending:
        pid = pending.pop()
        tree[pid] = commands.get(pid, [])
        pending += children.get(pid, [])
    return tree


def _server_pid(stack: LocalStack, module: str, port_flag: str) -> int:
    """The pid of the stack's ``python -m <module> ... --port <port>`` (not its restart wrapper)."""
    port = str(stack.ports[port_flag])
    found = [
        pid
        for pid, argv in _process_tree(stack.pid).items()
        if argv[1:3] == ["-m", module] and port in argv and argv[argv.index(port) - 1] == "--port"
    ]
    assert len(found) == 1, (module, port, _process_tree(stack.pid))
    return found[0]


def _kill_and_wait(pid: int) -> None:
    """SIGKILL ``pid`` and return once it is gone (reaped by its restart wrapper)."""
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"pid {pid} survived SIGKILL"
        time.sleep(0.01)


def _wait_healthy(urls: list[str]) -> None:
    deadline = time.monotonic() + RESTART_TIMEOUT_S
    for url in urls:
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{url} did not come back"
            time.sleep(0.1)


def _stored_items(stack: LocalStack, session_id: str) -> dict[str, dict[str, Any]]:
    """Every item of the session, by sort key, read from the DynamoDB server directly."""
    client = boto3.client(
        "dynamodb", endpoint_url=stack.url("dynamodb-port"), region_name="us-east-1"
    )
    items = client.query(
        TableName=f"chatbot-{stack.env_name}-sessions",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"SESSION#{session_id}"}},
        ConsistentRead=True,
    )["Items"]
    return {item["sk"]["S"]: item for item in items}


def test_chat_container_killed_mid_stream_ends_with_the_error_event_and_stores_the_turn_incomplete(
    scripted_stack: LocalStack,
):
    """Fault: the chat container's server process and its model backend are SIGKILLed while a
    streamed answer is being relayed.

    Client sees: the tokens relayed so far, then the error event ``stream_interrupted`` (the
    OpenAI error envelope plus ``chatbot.session_id``), then ``[DONE]``, then the stream ends.
    Stored: the user message and the reply as relayed, ``incomplete`` with finish_reason
    ``error``, and the header counting exactly those two messages. The rest of the stack keeps
    serving: the container is started again and the same session takes its next turn.
    """
    stack = scripted_stack
    chat_server = _server_pid(stack, "inference_server", "chat-port")
    chat_backend = _server_pid(stack, "local.scripted_backend", "scripted-chat-port")
    body = {
        "model": "chatbot",
        "stream": True,
        "max_tokens": 256,
        "retrieval": False,
        "messages": [{"role": "user", "content": KILL_QUESTION}],
    }
    relayed: list[str] = []
    events: list[Any] = []
    with (
        httpx.Client(base_url=stack.front_door_url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line.removeprefix("data: ")
            event = data if data == "[DONE]" else json.loads(data)
            events.append(event)
            if isinstance(event, dict) and "choices" in event:
                relayed.append(event["choices"][0]["delta"].get("content") or "")
                if len(relayed) == TOKENS_BEFORE_KILL:
                    # The server first: a dead backend under a live server would be reported
                    # by the server as its own error line, a different fault.
                    _kill_and_wait(chat_server)
                    _kill_and_wait(chat_backend)

    text = "".join(relayed)
    assert TOKENS_BEFORE_KILL <= len(relayed) < len(SLOW_TOKENS)
    assert text == "".join(SLOW_TOKENS[: len(relayed)])
    assert events[-1] == "[DONE]"
    error = events[-2]
    session_id = error["chatbot"]["session_id"]
    assert error == {
        "error": {
            "message": "The model stream failed (ModelStreamError).",
            "type": "upstream_error",
            "param": None,
            "code": "stream_interrupted",
        },
        "chatbot": {"session_id": session_id},
    }
    assert all(isinstance(e, dict) and "choices" in e for e in events[:-2])
    assert all(e["choices"][0]["finish_reason"] is None for e in events[:-2])

    with httpx.Client(base_url=stack.front_door_url, timeout=30) as client:
        session = client.get(f"/v1/sessions/{session_id}")
        assert session.status_code == 200, session.text
        messages = session.json()["messages"]
        assert [(m["role"], m["content"]) for m in messages] == [
            ("user", KILL_QUESTION),
            ("assistant", text),
        ]
        assert (messages[1]["incomplete"], messages[1]["finish_reason"]) == (True, "error")
        items = _stored_items(stack, session_id)
        assert sorted(items) == ["META", "MSG#000000", "MSG#000001"]
        assert items["META"]["message_count"] == {"N": "2"}
        assert items["MSG#000001"]["content"] == {"S": text}
        assert items["MSG#000001"]["incomplete"] == {"BOOL": True}

        # Not the whole stack: the wrapper says what happened and starts the container again.
        _wait_healthy(
            [f"{stack.url('chat-port')}/ping", f"{stack.url('scripted-chat-port')}/health"]
        )
        log = stack.log.read_text(encoding="utf-8")
        assert "chat: killed by SIGKILL; restarting" in log
        assert "scripted_chat: killed by SIGKILL; restarting" in log
        assert _server_pid(stack, "inference_server", "chat-port") != chat_server
        follow_up = client.post(
            "/v1/chat/completions",
            json={
                "session_id": session_id,
                "retrieval": False,
                "messages": [{"role": "user", "content": "question-07"}],
            },
        )
        assert follow_up.status_code == 200, follow_up.text
        assert follow_up.json()["choices"][0]["message"]["content"] == "answer-07"
        after = client.get(f"/v1/sessions/{session_id}").json()["messages"]
        assert [m["content"] for m in after] == [KILL_QUESTION, text, "question-07", "answer-07"]


def _question(session: int, turn: int) -> tuple[str, str]:
    """A user message unique to the session and turn, and its scripted answer."""
    number = (session * TURNS + turn) % ANSWERS
    return f"session {session:03d} turn {turn}: question-{number:02d}", f"answer-{number:02d}"


def test_hundred_sessions_of_five_turns_keep_their_ten_messages_in_order(
    scripted_stack: LocalStack,
):
    """Fault: none; load: 100 conversations of 5 turns, all in flight at once, through the stack.

    Client sees: every answer, each the scripted answer to its question. Stored: every session
    has exactly its 10 messages, user/assistant alternating, in the order they were sent.
    """

    async def converse(client: httpx.AsyncClient, session: int) -> str:
        session_id: str | None = None
        for turn in range(TURNS):
            question, answer = _question(session, turn)
            body: dict[str, Any] = {
                "retrieval": False,  # the embedding model's CPU time is not what this tests
                "messages": [{"role": "user", "content": question}],
            }
            if session_id is not None:
                body["session_id"] = session_id
            reply = await client.post("/v1/chat/completions", json=body)
            assert reply.status_code == 200, reply.text
            assert reply.json()["choices"][0]["message"]["content"] == answer
            session_id = reply.json()["chatbot"]["session_id"]
        assert session_id is not None
        return session_id

    async def everyone() -> list[str]:
        # Idle connections are dropped well before uvicorn's 5 s keep-alive ends them: reusing
        # one the server is closing at that moment fails the request (a ReadError, not a fault).
        limits = httpx.Limits(
            max_connections=SESSIONS, max_keepalive_connections=SESSIONS, keepalive_expiry=1.0
        )
        async with httpx.AsyncClient(
            base_url=scripted_stack.front_door_url, timeout=120, limits=limits
        ) as client:
            return list(await asyncio.gather(*(converse(client, n) for n in range(SESSIONS))))

    session_ids = asyncio.run(everyone())
    assert len(set(session_ids)) == SESSIONS
    for n, session_id in enumerate(session_ids):
        items = _stored_items(scripted_stack, session_id)
        expected: list[str] = []
        for turn in range(TURNS):
            expected += _question(n, turn)
        assert sorted(items) == ["META", *(f"MSG#{seq:06d}" for seq in range(2 * TURNS))]
        assert [items[f"MSG#{seq:06d}"]["content"]["S"] for seq in range(2 * TURNS)] == expected
        assert [items[f"MSG#{seq:06d}"]["role"]["S"] for seq in range(2 * TURNS)] == [
            "user",
            "assistant",
        ] * TURNS
        assert items["META"]["message_count"] == {"N": str(2 * TURNS)}
