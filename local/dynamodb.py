"""Local DynamoDB-compatible server (moto, one request at a time) and the session table schema.

moto's backend takes no lock, so under concurrent requests its condition checks and
transactions are not atomic (lost updates, "dictionary changed size during iteration");
DynamoDB's are. Serving one request at a time gives the guarantee the session store relies
on, which the concurrency tests then exercise. moto offers no such switch, hence this wrapper.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from chatbot_contracts import sessions as schema

__all__ = ["DynamoDbServer", "create_session_table", "main"]


class DynamoDbServer:
    """moto in server mode on ``host:port``, serving one request at a time.

    Parameters
    ----------
    host, port
        Where to listen.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8002) -> None:
        moto_app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ: Any, start_response: Any) -> list[bytes]:
            with lock:
                return list(moto_app(environ, start_response))

        self.url = f"http://{host}:{port}"
        self._server: BaseWSGIServer = make_server(
            host, port, serialized, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._server.serve_forever()


def create_session_table(client: Any, name: str) -> None:
    """Create the session table as docs/interfaces.md describes it, with TTL on ``expires_at``.

    Parameters
    ----------
    client
        A boto3 DynamoDB client.
    name
        Table name.
    """
    client.create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": attribute, "AttributeType": "S"}
            for attribute in (
                schema.PARTITION_KEY,
                schema.SORT_KEY,
                schema.OWNER_INDEX_PARTITION_KEY,
                schema.OWNER_INDEX_SORT_KEY,
            )
        ],
        KeySchema=[
            {"AttributeName": schema.PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": schema.SORT_KEY, "KeyType": "RANGE"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": schema.OWNER_INDEX_NAME,
                "KeySchema": [
                    {"AttributeName": schema.OWNER_INDEX_PARTITION_KEY, "KeyType": "HASH"},
                    {"AttributeName": schema.OWNER_INDEX_SORT_KEY, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    client.get_waiter("table_exists").wait(
        TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30}
    )
    client.update_time_to_live(
        TableName=name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE},
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m local.dynamodb --host H --port P``: serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    args = parser.parse_args(argv)
    server = DynamoDbServer(args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
