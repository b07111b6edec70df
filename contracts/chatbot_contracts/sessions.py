"""The session table's key schema, index and TTL attribute: one item per message, a header each."""

from __future__ import annotations

__all__ = [
    "HEADER_SORT_KEY",
    "MESSAGE_SORT_KEY_PREFIX",
    "OWNER_INDEX_NAME",
    "OWNER_INDEX_PARTITION_KEY",
    "OWNER_INDEX_SORT_KEY",
    "PARTITION_KEY",
    "SESSION_KEY_PREFIX",
    "SORT_KEY",
    "TTL_ATTRIBUTE",
    "message_sort_key",
    "session_partition_key",
]

PARTITION_KEY = "pk"
"""String partition key: ``SESSION#<session id>``."""

SORT_KEY = "sk"
"""String sort key: :data:`HEADER_SORT_KEY` or ``MSG#<zero-padded sequence number>``."""

OWNER_INDEX_NAME = "by-owner"
"""Sparse GSI over session headers: only header items carry the owner attribute."""

OWNER_INDEX_PARTITION_KEY = "owner"
OWNER_INDEX_SORT_KEY = "updated_at"

TTL_ATTRIBUTE = "expires_at"
"""Epoch seconds after which DynamoDB may delete the item."""

SESSION_KEY_PREFIX = "SESSION#"
HEADER_SORT_KEY = "META"
MESSAGE_SORT_KEY_PREFIX = "MSG#"
_SEQUENCE_DIGITS = 6


def session_partition_key(session_id: str) -> str:
    """The partition key value of a session's items.

    Parameters
    ----------
    session_id
        The session id.

    Returns
    -------
    str
        ``SESSION#<session_id>``.
    """
    return SESSION_KEY_PREFIX + session_id


def message_sort_key(seq: int) -> str:
    """The sort key value of message ``seq``, zero-padded so that keys sort by number.

    Parameters
    ----------
    seq
        The message's sequence number in its session (from 0).

    Returns
    -------
    str
        ``MSG#000042`` for 42.
    """
    return f"{MESSAGE_SORT_KEY_PREFIX}{seq:0{_SEQUENCE_DIGITS}d}"
