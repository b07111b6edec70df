"""DynamoDB session store: an item per message plus a header, in conditional transactions."""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from chatbot_contracts import sessions as schema
from front_door.errors import (
    DeleteIncompleteError,
    FrontDoorError,
    InvalidRequestError,
    SessionConflictError,
    SessionNotFoundError,
    UpstreamThrottledError,
    UpstreamUnavailableError,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from front_door.settings import Settings

_TITLE_CHARS = 80
_BATCH_ATTEMPTS = 8
_BATCH_BACKOFF_CAP_S = 0.4
_CONDITION_CODES = frozenset({"ConditionalCheckFailedException", "TransactionCanceledException"})
_THROTTLING_CODES = frozenset(
    {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded"}
)


@dataclass(frozen=True)
class NewMessage:
    """A message to append; assistant-only fields stay ``None`` for other roles."""

    role: str
    content: str
    finish_reason: str | None = None
    moderation: str | None = None
    sources: list[dict[str, Any]] | None = None
    incomplete: bool | None = None
    blocked: bool = False


@dataclass(frozen=True)
class StoredMessage:
    """A message as stored, with its sequence number."""

    seq: int
    role: str
    content: str
    created_at: str
    finish_reason: str | None = None
    moderation: str | None = None
    sources: list[dict[str, Any]] | None = None
    incomplete: bool | None = None
    blocked: bool = False


@dataclass(frozen=True)
class SessionHeader:
    """The session's header item."""

    session_id: str
    owner: str
    title: str
    created_at: str
    updated_at: str
    message_count: int
    expires_at: int


@dataclass(frozen=True)
class SessionPage:
    """One page of a principal's sessions, newest first."""

    sessions: list[SessionHeader]
    next_cursor: str | None = None


def new_session_id() -> str:
    """A fresh, unguessable session id (32 hex characters)."""
    return uuid.uuid4().hex


def _now_iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _pk(session_id: str) -> dict[str, str]:
    return {"S": schema.session_partition_key(session_id)}


def _sk(seq: int) -> dict[str, str]:
    return {"S": schema.message_sort_key(seq)}


_HEADER_SK = {"S": schema.HEADER_SORT_KEY}


def _header_from_item(item: dict[str, Any]) -> SessionHeader:
    return SessionHeader(
        session_id=item[schema.PARTITION_KEY]["S"].removeprefix(schema.SESSION_KEY_PREFIX),
        owner=item[schema.OWNER_INDEX_PARTITION_KEY]["S"],
        title=item.get("title", {}).get("S", ""),
        created_at=item["created_at"]["S"],
        updated_at=item[schema.OWNER_INDEX_SORT_KEY]["S"],
        message_count=int(item["message_count"]["N"]),
        expires_at=int(item.get(schema.TTL_ATTRIBUTE, {}).get("N", "0")),
    )


def _message_from_item(item: dict[str, Any]) -> StoredMessage:
    sources = item.get("sources", {}).get("S")
    return StoredMessage(
        seq=int(item[schema.SORT_KEY]["S"].removeprefix(schema.MESSAGE_SORT_KEY_PREFIX)),
        role=item["role"]["S"],
        content=item["content"]["S"],
        created_at=item["created_at"]["S"],
        finish_reason=item.get("finish_reason", {}).get("S"),
        moderation=item.get("moderation", {}).get("S"),
        sources=json.loads(sources) if sources else None,
        incomplete=item["incomplete"]["BOOL"] if "incomplete" in item else None,
        blocked=item.get("blocked", {}).get("BOOL", False),
    )


def _message_item(
    session_id: str, seq: int, message: NewMessage, now: str, expires_at: int
) -> dict[str, Any]:
    item: dict[str, Any] = {
        schema.PARTITION_KEY: _pk(session_id),
        schema.SORT_KEY: _sk(seq),
        "role": {"S": message.role},
        "content": {"S": message.content},
        "created_at": {"S": now},
        schema.TTL_ATTRIBUTE: {"N": str(expires_at)},
    }
    if message.finish_reason is not None:
        item["finish_reason"] = {"S": message.finish_reason}
    if message.moderation is not None:
        item["moderation"] = {"S": message.moderation}
    if message.sources is not None:
        item["sources"] = {"S": json.dumps(message.sources)}
    if message.incomplete is not None:
        item["incomplete"] = {"BOOL": message.incomplete}
    if message.blocked:
        item["blocked"] = {"BOOL": True}
    return item


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _map_store_error(exc: Exception) -> FrontDoorError:
    from botocore.exceptions import ClientError

    from front_door.observability import get_logger

    get_logger().warning("session store call failed", extra={"error": repr(exc)})
    if isinstance(exc, ClientError) and _error_code(exc) in _THROTTLING_CODES:
        return UpstreamThrottledError("The session store is throttling requests.")
    return UpstreamUnavailableError("The session store is unavailable.")


class SessionStore:
    """Sessions in the DynamoDB table described in docs/interfaces.md.

    Concurrent appends to one session are serialized at commit: each turn is written with
    its header update in one ``TransactWriteItems`` conditioned on the header's
    ``message_count`` (optimistic concurrency). A writer that loses the race re-reads the
    count and appends its turn after the winner's, so no turn is lost, duplicated or
    interleaved; a turn's prompt saw the history as of its start. Only a session deleted
    under the write (or a retry budget exhausted) raises :class:`SessionConflictError`.

    Parameters
    ----------
    client
        A boto3 ``dynamodb`` client.
    table
        Table name.
    owner_index
        Name of the sparse ``owner``/``updated_at`` GSI.
    ttl_days
        Items expire this many days after their last write; the header's expiry is
        refreshed by every turn.
    conflict_retry_attempts
        Appends tried before giving up with 409.
    clock
        Epoch-seconds clock, injectable for TTL tests.
    """

    def __init__(
        self,
        client: BaseClient,
        *,
        table: str,
        owner_index: str,
        ttl_days: int,
        conflict_retry_attempts: int = 40,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._table = table
        self._owner_index = owner_index
        self._ttl_seconds = ttl_days * 86_400
        self._attempts = conflict_retry_attempts
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionStore:
        """Build the store and its boto3 client from the front-door settings.

        Parameters
        ----------
        settings
            Table, index, TTL, endpoint URL override and region.

        Returns
        -------
        SessionStore
            The store.
        """
        import boto3
        from botocore.config import Config

        config = Config(
            retries={"mode": "standard", "max_attempts": settings.dynamodb_retries},
            connect_timeout=3,
            read_timeout=settings.dynamodb_read_timeout_s,
            max_pool_connections=settings.max_pool_connections,
        )
        client = boto3.session.Session().client(
            "dynamodb",
            endpoint_url=settings.dynamodb_endpoint_url,
            region_name=settings.region,
            config=config,
        )
        return cls(
            client,
            table=settings.session_table,
            owner_index=settings.session_owner_index,
            ttl_days=settings.session_ttl_days,
            conflict_retry_attempts=settings.conflict_retry_attempts,
        )

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result: dict[str, Any] = getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            if _error_code(exc) in _CONDITION_CODES:
                raise
            raise _map_store_error(exc) from exc
        except BotoCoreError as exc:
            raise _map_store_error(exc) from exc
        return result

    def get_header(self, session_id: str, owner: str) -> SessionHeader:
        """The session's header, if ``owner`` owns it.

        Parameters
        ----------
        session_id, owner
            Session and calling principal.

        Returns
        -------
        SessionHeader
            The header, read strongly consistently.

        Raises
        ------
        SessionNotFoundError
            Unknown, expired or owned by another principal (indistinguishable on purpose).
        """
        response = self._call(
            "get_item",
            TableName=self._table,
            Key={schema.PARTITION_KEY: _pk(session_id), schema.SORT_KEY: _HEADER_SK},
            ConsistentRead=True,
        )
        item = response.get("Item")
        if item is None or item.get(schema.OWNER_INDEX_PARTITION_KEY, {}).get("S") != owner:
            raise SessionNotFoundError(f"No session {session_id!r}.", param="session_id")
        header = _header_from_item(item)
        # DynamoDB deletes expired items lazily (up to days later): hide them now.
        if header.expires_at and header.expires_at <= self._clock():
            raise SessionNotFoundError(f"No session {session_id!r}.", param="session_id")
        return header

    def _query_messages(
        self, session_id: str, *, newest_first: bool, limit: int | None
    ) -> Iterator[StoredMessage]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": (
                f"{schema.PARTITION_KEY} = :pk AND begins_with({schema.SORT_KEY}, :prefix)"
            ),
            "ExpressionAttributeValues": {
                ":pk": _pk(session_id),
                ":prefix": {"S": schema.MESSAGE_SORT_KEY_PREFIX},
            },
            "ScanIndexForward": not newest_first,
            "ConsistentRead": True,
        }
        remaining = limit
        while True:
            if remaining is not None:
                kwargs["Limit"] = remaining
            response = self._call("query", **kwargs)
            for item in response.get("Items", []):
                yield _message_from_item(item)
            if remaining is not None:
                remaining -= len(response.get("Items", []))
                if remaining <= 0:
                    return
            last_key = response.get("LastEvaluatedKey")
            if not last_key:
                return
            kwargs["ExclusiveStartKey"] = last_key

    def get_session(self, session_id: str, owner: str) -> tuple[SessionHeader, list[StoredMessage]]:
        """The session's header and every message, oldest first.

        Parameters
        ----------
        session_id, owner
            Session and calling principal.

        Returns
        -------
        tuple
            ``(header, messages)``.
        """
        header = self.get_header(session_id, owner)
        messages = list(self._query_messages(session_id, newest_first=False, limit=None))
        return header, messages

    def load_history(
        self, session_id: str, owner: str, *, max_messages: int, max_chars: int
    ) -> tuple[SessionHeader, list[dict[str, str]]]:
        """The prompt window: the newest messages within both bounds, oldest first.

        Messages blocked by moderation are left out of the prompt, and the window never
        starts with an assistant message.

        Parameters
        ----------
        session_id, owner
            Session and calling principal.
        max_messages, max_chars
            Bounds of the window (messages, total characters of content).

        Returns
        -------
        tuple
            ``(header, [{"role", "content"}, ...])``.
        """
        header = self.get_header(session_id, owner)
        window: list[dict[str, str]] = []
        used = 0
        for message in self._query_messages(session_id, newest_first=True, limit=max_messages):
            if message.blocked:
                continue
            used += len(message.content)
            if used > max_chars:
                break
            window.append({"role": message.role, "content": message.content})
        window.reverse()
        while window and window[0]["role"] == "assistant":
            window.pop(0)
        return header, window

    def append_turn(
        self,
        session_id: str,
        owner: str,
        messages: list[NewMessage],
        *,
        expected_count: int | None,
        title: str = "",
    ) -> SessionHeader:
        """Append messages atomically after the session's last message.

        Parameters
        ----------
        session_id, owner
            Session and calling principal.
        messages
            The turn (new user messages, then the assistant reply).
        expected_count
            ``message_count`` the caller last saw, or ``None`` to create the session.
        title
            Title of a new session.

        Returns
        -------
        SessionHeader
            The header after the write.

        Raises
        ------
        SessionConflictError
            The session was deleted meanwhile, or the retry budget ran out.
        """
        from botocore.exceptions import ClientError

        for attempt in range(self._attempts):
            epoch = self._clock()
            now = _now_iso(epoch)
            expires_at = int(epoch) + self._ttl_seconds
            start = expected_count or 0
            items = [
                {
                    "Put": {
                        "TableName": self._table,
                        "Item": _message_item(session_id, start + i, message, now, expires_at),
                        "ConditionExpression": f"attribute_not_exists({schema.PARTITION_KEY})",
                    }
                }
                for i, message in enumerate(messages)
            ]
            header_write = self._header_write(
                session_id, owner, expected_count, len(messages), now, expires_at, title
            )
            try:
                self._call(
                    "transact_write_items",
                    TransactItems=[header_write, *items],
                    # Makes botocore's own retries of this exact write idempotent.
                    ClientRequestToken=uuid.uuid4().hex,
                )
            except ClientError as exc:
                if _error_code(exc) not in _CONDITION_CODES:
                    raise _map_store_error(exc) from exc
                reasons = [r.get("Code") for r in exc.response.get("CancellationReasons", [])]
                if reasons and any(
                    code not in {"ConditionalCheckFailed", "None", None, "TransactionConflict"}
                    for code in reasons
                ):
                    raise _map_store_error(exc) from exc
                # Lost the race: jittered back-off, then append after the winner's turn.
                time.sleep(random.uniform(0, min(0.2, 0.005 * 2**attempt)))  # noqa: S311
                try:
                    expected_count = self.get_header(session_id, owner).message_count
                except SessionNotFoundError:
                    if expected_count is None:
                        continue  # a new session's header was never written: try again
                    raise SessionConflictError(
                        "The session was deleted while the answer was generated.",
                        param="session_id",
                    ) from exc
                continue
            return SessionHeader(
                session_id=session_id,
                owner=owner,
                title=title,
                created_at=now,
                updated_at=now,
                message_count=start + len(messages),
                expires_at=expires_at,
            )
        raise SessionConflictError(
            "Too many concurrent writes to this session; retry.", param="session_id"
        )

    def _header_write(
        self,
        session_id: str,
        owner: str,
        expected_count: int | None,
        added: int,
        now: str,
        expires_at: int,
        title: str,
    ) -> dict[str, Any]:
        key = {schema.PARTITION_KEY: _pk(session_id), schema.SORT_KEY: _HEADER_SK}
        if expected_count is None:
            return {
                "Put": {
                    "TableName": self._table,
                    "Item": {
                        **key,
                        schema.OWNER_INDEX_PARTITION_KEY: {"S": owner},
                        "created_at": {"S": now},
                        schema.OWNER_INDEX_SORT_KEY: {"S": now},
                        "message_count": {"N": str(added)},
                        "title": {"S": title[:_TITLE_CHARS]},
                        schema.TTL_ATTRIBUTE: {"N": str(expires_at)},
                    },
                    "ConditionExpression": f"attribute_not_exists({schema.PARTITION_KEY})",
                }
            }
        return {
            "Update": {
                "TableName": self._table,
                "Key": key,
                "UpdateExpression": (
                    "SET message_count = :new, updated_at = :now, expires_at = :exp"
                ),
                "ConditionExpression": "message_count = :expected AND #owner = :owner",
                "ExpressionAttributeNames": {"#owner": schema.OWNER_INDEX_PARTITION_KEY},
                "ExpressionAttributeValues": {
                    ":new": {"N": str(expected_count + added)},
                    ":expected": {"N": str(expected_count)},
                    ":now": {"S": now},
                    ":exp": {"N": str(expires_at)},
                    ":owner": {"S": owner},
                },
            }
        }

    def list_sessions(self, owner: str, *, limit: int, cursor: str | None) -> SessionPage:
        """A page of ``owner``'s sessions, most recently updated first.

        Parameters
        ----------
        owner
            Calling principal.
        limit
            Page size.
        cursor
            ``next_cursor`` of the previous page.

        Returns
        -------
        SessionPage
            Sessions and the cursor of the next page (``None`` on the last page).
        """
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": self._owner_index,
            "KeyConditionExpression": "#owner = :owner",
            "ExpressionAttributeNames": {"#owner": schema.OWNER_INDEX_PARTITION_KEY},
            "ExpressionAttributeValues": {":owner": {"S": owner}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            kwargs["ExclusiveStartKey"] = _decode_cursor(cursor, owner)
        response = self._call("query", **kwargs)
        now = self._clock()
        sessions = [
            header
            for header in map(_header_from_item, response.get("Items", []))
            if not header.expires_at or header.expires_at > now
        ]
        last_key = response.get("LastEvaluatedKey")
        return SessionPage(sessions, _encode_cursor(last_key) if last_key else None)

    def delete_session(self, session_id: str, owner: str) -> None:
        """Delete the header (so the session vanishes at once), then every message.

        Parameters
        ----------
        session_id, owner
            Session and calling principal.

        Raises
        ------
        SessionNotFoundError
            Unknown or owned by another principal.
        DeleteIncompleteError
            The header is gone but ``UnprocessedItems`` still held messages after every
            retry (never silent: the caller gets a 503 and the route emits a metric).
        """
        from botocore.exceptions import ClientError

        try:
            self._call(
                "delete_item",
                TableName=self._table,
                Key={schema.PARTITION_KEY: _pk(session_id), schema.SORT_KEY: _HEADER_SK},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": schema.OWNER_INDEX_PARTITION_KEY},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            raise SessionNotFoundError(f"No session {session_id!r}.", param="session_id") from exc
        # An append racing this delete fails its header condition, so nothing is re-created.
        keys = [
            {schema.PARTITION_KEY: _pk(session_id), schema.SORT_KEY: _sk(message.seq)}
            for message in self._query_messages(session_id, newest_first=False, limit=None)
        ]
        left = 0
        for start in range(0, len(keys), 25):
            requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
            pending: dict[str, Any] = {self._table: requests}
            for attempt in range(_BATCH_ATTEMPTS):
                response = self._call("batch_write_item", RequestItems=pending)
                pending = response.get("UnprocessedItems") or {}
                if not pending or attempt == _BATCH_ATTEMPTS - 1:
                    break
                time.sleep(min(_BATCH_BACKOFF_CAP_S, 0.05 * 2**attempt))
            left += sum(len(batch) for batch in pending.values())
        if left:
            raise DeleteIncompleteError(
                f"The session was deleted, but {left} of its {len(keys)} messages could not be "
                "removed after retries; they are no longer readable and expire with the "
                "table's TTL.",
                left=left,
            )


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key, sort_keys=True).encode()).decode()


def _decode_cursor(cursor: str, owner: str) -> dict[str, Any]:
    invalid = InvalidRequestError("Invalid cursor.", param="cursor")
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise invalid from exc
    if not isinstance(key, dict) or set(key) != {
        schema.PARTITION_KEY,
        schema.SORT_KEY,
        schema.OWNER_INDEX_PARTITION_KEY,
        schema.OWNER_INDEX_SORT_KEY,
    }:
        raise invalid
    try:
        valid = (
            all(isinstance(v, dict) and isinstance(v.get("S"), str) for v in key.values())
            and key[schema.OWNER_INDEX_PARTITION_KEY]["S"] == owner
            and key[schema.PARTITION_KEY]["S"].startswith(schema.SESSION_KEY_PREFIX)
            and key[schema.SORT_KEY] == _HEADER_SK
        )
    except (AttributeError, TypeError):
        valid = False
    if not valid:
        raise invalid
    return key
