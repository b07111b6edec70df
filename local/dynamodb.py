"""Local DynamoDB-compatible server (moto, one request at a time) and the session table schema.

moto's backend takes no lock, so under concurrent requests its condition checks and
transactions are not atomic (lost updates, "dictionary changed size during iteration");
DynamoDB's are. Serving one request at a time gives the guarantee the session store relies
on, which the concurrency tests then exercise. moto offers no such switch, hence this wrapper.

moto also backs up every table a transaction names, whole (a deep copy per transaction item),
to roll back a cancelled transaction: each ``TransactWriteItems`` costs time in proportion to
the table, so a few hundred conversations slow to a crawl. The server backs up only the items a
transaction touches instead, which rolls back the same; and moto answers a ``Query`` on the
table's key by sorting every item of the table, which the server narrows to the queried
partition (:func:`scale_with_the_partition`), the same items in the same order.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from chatbot_contracts import sessions as schema

__all__ = ["DynamoDbServer", "create_session_table", "main", "scale_with_the_partition"]

_in_transaction = threading.local()
_queried_partition = threading.local()
_Backup = list[tuple[Table, DynamoType, DynamoType | None, Any]]


class _CopyKeepingTables:
    """Stands in for the ``copy`` module inside moto's DynamoDB backend: within a transaction
    a table's "backup" is the table itself, since the touched items are backed up instead."""

    copy = staticmethod(copy.copy)

    @staticmethod
    def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
        if getattr(_in_transaction, "active", False) and isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


def _touched_items(backend: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> _Backup:
    """A copy of every item the transaction names (None where absent), in request order."""
    backup: _Backup = []
    for entry in transact_items:
        if len(entry) != 1:
            continue  # moto refuses it before writing anything
        op_type, op = next(iter(entry.items()))
        table = backend.tables.get(str(op.get("TableName"))) if isinstance(op, dict) else None
        key = (op.get("Item") if op_type == "Put" else op.get("Key")) if table else None
        if table is None or not isinstance(key, dict):
            continue
        try:
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        except KeyError:
            continue  # moto refuses the item without writing it
        current = table.get_item(hash_value, range_value)
        backup.append((table, hash_value, range_value, copy.deepcopy(current)))
    return backup


def _restore(backup: _Backup) -> None:
    # Reversed: where a transaction names one item twice, its first backup is the original.
    for table, hash_value, range_value, item in reversed(backup):
        if item is None:
            table.delete_item(hash_value, range_value)
        elif range_value is not None:
            table.items[hash_value][range_value] = item
        else:
            table.items[hash_value] = item


def scale_with_the_partition() -> None:
    """Make moto's transactions and key queries cost what their items cost, not the table.

    ``TransactWriteItems`` backs up the items it names instead of whole tables: a cancelled
    transaction is rolled back exactly as before (every named item as it was). A ``Query`` on
    the table's own key (no index) looks at the queried partition only, where moto sorted the
    whole table and kept that partition. Only sound while one request runs at a time, which
    :class:`DynamoDbServer` ensures. Idempotent.
    """
    moto_transact: Callable[..., None] = DynamoDBBackend.transact_write_items
    if getattr(moto_transact, "backs_up_touched_items_only", False):
        return
    moto_query: Callable[..., Any] = Table.query
    moto_all_items: Callable[[Table], list[Any]] = Table.all_items

    def query(self: Table, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # moto's positional order: ..., projection_expressions, index_name, ...
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        _queried_partition.key = (self, hash_key) if index_name is None else None
        try:
            return moto_query(self, hash_key, *args, **kwargs)
        finally:
            _queried_partition.key = None

    def all_items(self: Table) -> list[Any]:
        queried = getattr(_queried_partition, "key", None)
        if queried is None or queried[0] is not self:
            return moto_all_items(self)
        if queried[1] not in self.items:  # not `.get`: items is a defaultdict
            return []
        partition = self.items[queried[1]]
        items = list(partition.values()) if self.range_key_attr else [partition]
        return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        backup = _touched_items(self, transact_items)
        _in_transaction.active = True
        try:
            moto_transact(self, transact_items)
        except BaseException:
            _restore(backup)
            raise
        finally:
            _in_transaction.active = False

    transact_write_items.backs_up_touched_items_only = True  # type: ignore[attr-defined]
    importlib.import_module(DynamoDBBackend.__module__).copy = _CopyKeepingTables()  # type: ignore[attr-defined]
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]


class DynamoDbServer:
    """moto in server mode on ``host:port``, serving one request at a time.

    Parameters
    ----------
    host, port
        Where to listen.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8002) -> None:
        scale_with_the_partition()
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
