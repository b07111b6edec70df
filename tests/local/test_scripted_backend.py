"""The scripted OpenAI-compatible backend, over real HTTP, with the openai SDK and raw httpx."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from local.scripted_backend import Rule, Script, build_app, split_tokens

pytestmark = pytest.mark.timeout(60)

ANSWER = "A data engineer builds pipelines that move data."


@pytest.fixture(scope="module")
def base_url(serve_app: Any) -> Iterator[str]:
    with serve_app(build_app(Script())) as url:
        yield url


def set_script(base_url: str, script: Script) -> None:
    response = httpx.put(f"{base_url}/_script", json=script.model_dump(mode="json"))
    response.raise_for_status()
    httpx.delete(f"{base_url}/_stats").raise_for_status()


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    set_script(base_url, Script(default=Rule(response=ANSWER)))
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def sse_events(raw: str) -> list[str]:
    """Split an SSE body into its data payloads, checking the framing on the way."""
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


def test_split_tokens_modes() -> None:
    assert split_tokens("Hi there  you ", "words", 4) == ["Hi", " there", "  you", " "]
    assert split_tokens("abcdefg", "chunks", 3) == ["abc", "def", "g"]
    assert split_tokens("añb", "chars", 1) == ["a", "ñ", "b"]


def test_chat_stream_with_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta]
    assert "".join(x or "" for x in contents) == ANSWER
    token_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert [c.choices[0].delta.content for c in token_chunks] == split_tokens(ANSWER, "words", 4)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert finals[0].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(token_chunks)
    assert chunks[-1].usage.prompt_tokens == 1
    assert all(c.object == "chat.completion.chunk" and c.model == "m" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_chat_non_streaming_with_sdk(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hello there"}]
    )
    assert response.object == "chat.completion"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.prompt_tokens == 2
    assert response.usage.completion_tokens == len(split_tokens(ANSWER, "words", 4))


def test_completions_with_sdk(client: openai.OpenAI) -> None:
    response = client.completions.create(model="m", prompt="say it", max_tokens=3)
    assert response.object == "text_completion"
    assert response.choices[0].text == "A data engineer"
    assert response.choices[0].finish_reason == "length"
    stream = client.completions.create(model="m", prompt="say it", stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "text_completion" for c in chunks)


def test_raw_stream_shape(client: openai.OpenAI, base_url: str) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" in c for c in chunks)
    assert [c["usage"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    assert set(chunks[-1]["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    without_usage = httpx.post(
        f"{base_url}/v1/chat/completions", json=body | {"stream_options": None}
    )
    assert all("usage" not in json.loads(e) for e in sse_events(without_usage.text)[:-1])


def test_rule_matching(base_url: str, client: openai.OpenAI) -> None:
    script = Script(
        rules=[
            Rule(name="once", contains="retry", response="first", max_uses=1),
            Rule(name="sub", contains="weather", response="sunny"),
            Rule(name="re", regex=r"^\d+ \+ \d+$", response="a sum"),
            Rule(name="comp", endpoint="completions", response="completion only"),
            Rule(name="sys", scope="all", contains="PIRATE", response="arr"),
        ],
        default=Rule(response="fallback"),
    )
    set_script(base_url, script)

    def ask(text: str, system: str = "be brief") -> str | None:
        messages: Any = [{"role": "system", "content": system}, {"role": "user", "content": text}]
        result = client.chat.completions.create(model="m", messages=messages)
        return result.choices[0].message.content

    assert ask("how is the weather?") == "sunny"
    assert ask("12 + 30") == "a sum"
    assert ask("x 12 + 30") == "fallback"
    assert ask("retry please") == "first"
    assert ask("retry please") == "fallback"
    assert ask("hi", system="talk like a PIRATE") == "arr"
    assert client.completions.create(model="m", prompt="hi").choices[0].text == "completion only"
    stats = httpx.get(f"{base_url}/_stats").json()
    assert stats["rule_hits"] == {"sub": 1, "re": 1, "default": 2, "once": 1, "sys": 1, "comp": 1}
    assert stats["requests"]["chat"] == 6
    assert stats["last_requests"][0]["body"]["messages"][1]["content"] == "how is the weather?"
    assert stats["last_requests"][-1]["path"] == "/v1/completions"


def test_content_parts_are_matched(base_url: str, client: openai.OpenAI) -> None:
    set_script(base_url, Script(rules=[Rule(contains="part two", response="matched")]))
    response = client.chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "part one, "},
                    {"type": "text", "text": "part two"},
                ],
            }
        ],
    )
    assert response.choices[0].message.content == "matched"


def test_max_tokens_and_stop(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": "q"}]
    short = client.chat.completions.create(model="m", messages=messages, max_tokens=2)
    assert short.choices[0].message.content == "A data"
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 2
    stopped = client.chat.completions.create(model="m", messages=messages, stop=["line", "pipe"])
    assert stopped.choices[0].message.content == "A data engineer builds "
    assert stopped.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(
        model="m", messages=messages, stop="ngin", stream=True
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "A data e"
    assert chunks[-1].choices[0].finish_reason == "stop"
    both = client.chat.completions.create(model="m", messages=messages, stop="move", max_tokens=3)
    assert both.choices[0].message.content == "A data engineer"
    assert both.choices[0].finish_reason == "length"


def test_http_status_fault(base_url: str, client: openai.OpenAI) -> None:
    set_script(
        base_url,
        Script(default=Rule(http_status=429, error_message="slow down")),
    )
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert raised.value.status_code == 429
    raw = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "q"}], "stream": True},
    )
    assert raw.status_code == 429
    assert raw.json() == {
        "error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": "429"}
    }


def test_disconnect_mid_stream(base_url: str) -> None:
    set_script(base_url, Script(default=Rule(response=ANSWER, fail_after_tokens=3)))
    received: list[str] = []
    body = {"messages": [{"role": "user", "content": "q"}], "stream": True}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            received.extend(response.iter_lines())
    payloads = [line.removeprefix("data: ") for line in received if line]
    assert "[DONE]" not in payloads
    contents = [json.loads(p)["choices"][0]["delta"].get("content") for p in payloads]
    assert contents == ["", "A", " data", " engineer"]
    # the server survives a scripted disconnect
    assert httpx.get(f"{base_url}/health").status_code == 200


def test_error_event_mid_stream(base_url: str, client: openai.OpenAI) -> None:
    set_script(
        base_url,
        Script(
            default=Rule(
                response=ANSWER, fail_after_tokens=2, fail_mode="error_event", error_message="oom"
            )
        ),
    )
    seen: list[str] = []
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stream=True
    )

    def drain() -> None:
        seen.extend(chunk.choices[0].delta.content or "" for chunk in stream)

    with pytest.raises(openai.APIError, match="oom"):
        drain()
    assert "".join(seen) == "A data"
    raw = httpx.post(
        f"{base_url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "q"}], "stream": True},
    )
    events = sse_events(raw.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["message"] == "oom"
    assert all(json.loads(e)["choices"][0]["finish_reason"] is None for e in events[:-2])


def test_non_streaming_faults(base_url: str) -> None:
    body = {"messages": [{"role": "user", "content": "q"}]}
    set_script(base_url, Script(default=Rule(fail_after_tokens=0)))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{base_url}/v1/chat/completions", json=body)
    set_script(base_url, Script(default=Rule(fail_after_tokens=0, fail_mode="error_event")))
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    set_script(base_url, Script(default=Rule(response="two words", fail_after_tokens=5)))
    untouched = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert untouched.json()["choices"][0]["message"]["content"] == "two words"


def test_delays_and_explicit_tokens(base_url: str, client: openai.OpenAI) -> None:
    set_script(
        base_url,
        Script(default=Rule(tokens=["he", "llo", " wor", "ld"], first_token_delay_s=0.3)),
    )
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}], stream=True
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices[0].delta.content]
    assert time.monotonic() - started >= 0.3
    assert pieces == ["he", "llo", " wor", "ld"]


def test_bad_requests_get_the_openai_envelope(base_url: str) -> None:
    url = f"{base_url}/v1/chat/completions"
    for payload in (b"{not json", b"[]", b'{"messages": []}', b'{"messages": [{"content": 1}]}'):
        response = httpx.post(url, content=payload, headers={"content-type": "application/json"})
        assert response.status_code == 400, payload
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    bad_script = httpx.put(f"{base_url}/_script", json={"rules": [{"unknown": 1}]})
    assert bad_script.status_code == 400


def test_models_tokenize_and_script_roundtrip(base_url: str) -> None:
    script = Script(model="tiny", max_model_len=128, rules=[Rule(contains="x", response="y")])
    set_script(base_url, script)
    assert httpx.get(f"{base_url}/v1/models").json()["data"][0]["id"] == "tiny"
    tokenized = httpx.post(f"{base_url}/tokenize", json={"prompt": "one two three"}).json()
    assert tokenized["count"] == 3
    assert tokenized["max_model_len"] == 128
    assert Script.model_validate(httpx.get(f"{base_url}/_script").json()) == script
    default_model = httpx.post(
        f"{base_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}
    )
    assert default_model.json()["model"] == "tiny"


def test_64_concurrent_streams(base_url: str) -> None:
    set_script(base_url, Script(default=Rule(response=ANSWER, barrier=64)))
    body = {"messages": [{"role": "user", "content": "q"}], "stream": True}

    async def one(http: httpx.AsyncClient) -> str:
        text = ""
        async with http.stream("POST", f"{base_url}/v1/chat/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {"):
                    text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
        return text

    async def run_all() -> list[str]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=30) as http:
            return await asyncio.gather(*(one(http) for _ in range(64)))

    assert asyncio.run(run_all()) == [ANSWER] * 64
    stats = httpx.get(f"{base_url}/_stats").json()
    assert stats["max_active_streams"] == 64
    assert stats["active_streams"] == 0


def test_barrier_times_out_with_too_few_callers(base_url: str) -> None:
    set_script(base_url, Script(default=Rule(barrier=2, barrier_timeout_s=0.2)))
    body = {"messages": [{"role": "user", "content": "q"}], "stream": True}
    events = sse_events(httpx.post(f"{base_url}/v1/chat/completions", json=body).text)
    assert "barrier of 2 answers not reached" in json.loads(events[-2])["error"]["message"]
    response = httpx.post(f"{base_url}/v1/chat/completions", json=body | {"stream": False})
    assert response.status_code == 200  # the second caller opens the barrier for good


def test_command_line_with_script_file(tmp_path: Path) -> None:
    script_file = tmp_path / "script.json"
    script_file.write_text(
        json.dumps({"rules": [{"contains": "ping", "response": "pong"}]}), encoding="utf-8"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.scripted_backend",
            "--port",
            str(port),
            "--script",
            str(script_file),
        ],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        answer = httpx.post(
            f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "ping"}]}
        )
        assert answer.json()["choices"][0]["message"]["content"] == "pong"
    finally:
        process.terminate()
        process.wait(timeout=10)
