"""Shared fixtures: moto DynamoDB server, the session table, and uvicorn servers on free ports."""
# mypy: disable-error-code="import-untyped"

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "chatbot-front-door")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "Chatbot")

REGION = "us-east-1"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def _atomic_moto_server(port: int) -> Any:
    """moto in server mode, one request at a time.

    moto's backend takes no lock, so under concurrent requests its condition checks and
    transactions are not atomic (lost updates); DynamoDB's are. Serializing requests gives
    the guarantee the session store relies on, which the concurrency tests then exercise.
    """
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    lock = threading.Lock()

    def serialized(environ: Any, start_response: Any) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    app = DomainDispatcherApplication(create_backend_app)

    class AtomicMotoServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            self._server = make_server(
                "127.0.0.1", port, serialized, threaded=True, request_handler=MotoRequestHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)


@pytest.fixture(scope="session")
def dynamodb_url() -> Iterator[str]:
    """A moto DynamoDB-compatible server over real HTTP, for the whole session."""
    port = free_port()
    server = _atomic_moto_server(port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dynamodb(dynamodb_url: str) -> Any:
    """A boto3 DynamoDB client on the moto server."""
    import boto3

    return boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name=REGION)


def create_session_table(client: Any, name: str) -> str:
    """Create the session table exactly as docs/interfaces.md describes it.

    Parameters
    ----------
    client
        boto3 DynamoDB client.
    name
        Table name.

    Returns
    -------
    str
        The table name.
    """
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
            {"AttributeName": "updated_at", "AttributeType": "S"},
        ],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by-owner",
                "KeySchema": [
                    {"AttributeName": "owner", "KeyType": "HASH"},
                    {"AttributeName": "updated_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"},
    )
    return name


@pytest.fixture
def session_table(dynamodb: Any) -> str:
    """A fresh, empty session table for one test."""
    return create_session_table(dynamodb, f"sessions-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def module_session_table(dynamodb: Any) -> str:
    """A session table shared by one test module."""
    return create_session_table(dynamodb, f"sessions-{uuid.uuid4().hex[:12]}")


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
