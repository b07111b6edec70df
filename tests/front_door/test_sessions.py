"""SessionStore on a moto DynamoDB server: conditional appends, windows, TTL, delete, owners."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from front_door.errors import InvalidRequestError, SessionConflictError, SessionNotFoundError
from front_door.sessions import NewMessage, SessionStore, new_session_id

pytestmark = pytest.mark.timeout(60)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(dynamodb: Any, session_table: str, clock: Clock) -> SessionStore:
    return SessionStore(
        dynamodb, table=session_table, owner_index="by-owner", ttl_days=7, clock=clock
    )


def turn(question: str, answer: str) -> list[NewMessage]:
    return [
        NewMessage(role="user", content=question),
        NewMessage(role="assistant", content=answer, finish_reason="stop", incomplete=False),
    ]


def test_new_session_writes_header_and_messages_per_interface(store, scan_table, session_table):
    session_id = new_session_id()
    header = store.append_turn(
        session_id, "iam:alice", turn("hi", "hello"), expected_count=None, title="hi"
    )
    assert header.message_count == 2
    items = {item["sk"]["S"]: item for item in scan_table(session_table)}
    assert set(items) == {"META", "MSG#000000", "MSG#000001"}
    meta = items["META"]
    assert meta["pk"]["S"] == f"SESSION#{session_id}"
    assert meta["owner"]["S"] == "iam:alice"
    assert meta["message_count"]["N"] == "2"
    assert meta["title"]["S"] == "hi"
    assert meta["created_at"]["S"].endswith("Z")
    assert int(meta["expires_at"]["N"]) == 1_800_000_000 + 7 * 86_400
    assert items["MSG#000001"]["role"]["S"] == "assistant"
    assert items["MSG#000001"]["finish_reason"]["S"] == "stop"
    assert items["MSG#000001"]["incomplete"]["BOOL"] is False
    assert "owner" not in items["MSG#000000"]  # keeps the by-owner index sparse


def test_continuation_appends_after_last_message_and_refreshes_ttl(store, clock):
    session_id = new_session_id()
    store.append_turn(session_id, "iam:alice", turn("q1", "a1"), expected_count=None)
    clock.now += 3 * 86_400
    store.append_turn(session_id, "iam:alice", turn("q2", "a2"), expected_count=2)
    header, messages = store.get_session(session_id, "iam:alice")
    assert [m.content for m in messages] == ["q1", "a1", "q2", "a2"]
    assert [m.seq for m in messages] == [0, 1, 2, 3]
    assert header.expires_at == int(clock.now) + 7 * 86_400


def test_stale_expected_count_is_serialized_after_the_winner(store):
    session_id = new_session_id()
    store.append_turn(session_id, "iam:alice", turn("q1", "a1"), expected_count=None)
    store.append_turn(session_id, "iam:alice", turn("q2", "a2"), expected_count=2)
    # A writer that loaded the history before q2 still lands after it, never over it.
    store.append_turn(session_id, "iam:alice", turn("q3", "a3"), expected_count=2)
    _, messages = store.get_session(session_id, "iam:alice")
    assert [m.content for m in messages] == ["q1", "a1", "q2", "a2", "q3", "a3"]


def test_twenty_concurrent_appends_lose_and_duplicate_nothing(store):
    session_id = new_session_id()
    store.append_turn(session_id, "iam:alice", turn("q0", "a0"), expected_count=None)

    def append(i: int) -> None:
        store.append_turn(session_id, "iam:alice", turn(f"q{i}", f"a{i}"), expected_count=2)

    with ThreadPoolExecutor(max_workers=20) as pool:
        list(pool.map(append, range(1, 21)))
    header, messages = store.get_session(session_id, "iam:alice")
    assert header.message_count == 42
    contents = [m.content for m in messages]
    assert len(contents) == 42
    assert sorted(contents[0::2]) == sorted(f"q{i}" for i in range(21))
    # Every question is directly followed by its own answer: turns never interleave.
    assert all(a == "a" + q[1:] for q, a in zip(contents[0::2], contents[1::2], strict=True))
    assert [m.seq for m in messages] == list(range(42))


def test_history_window_is_bounded_and_skips_blocked_messages(store):
    session_id = new_session_id()
    store.append_turn(session_id, "u", turn("q0", "a0"), expected_count=None)
    count = 2
    for i in range(1, 6):
        store.append_turn(session_id, "u", turn(f"q{i}", f"a{i}"), expected_count=count)
        count += 2
    blocked = [
        NewMessage(role="user", content="[removed]", blocked=True),
        NewMessage(role="assistant", content="refused", blocked=True),
    ]
    store.append_turn(session_id, "u", blocked, expected_count=count)
    _, window = store.load_history(session_id, "u", max_messages=6, max_chars=10_000)
    # 6 newest = 2 blocked + q4 a4 q5 a5 -> blocked ones are left out of the prompt.
    assert [m["content"] for m in window] == ["q4", "a4", "q5", "a5"]
    _, small = store.load_history(session_id, "u", max_messages=20, max_chars=5)
    assert [m["content"] for m in small] == ["q5", "a5"]
    # The 5 newest end in "a4": a window never starts with an assistant message.
    _, odd = store.load_history(session_id, "u", max_messages=5, max_chars=10_000)
    assert [m["content"] for m in odd] == ["q5", "a5"]


def test_another_owner_sees_nothing(store):
    session_id = new_session_id()
    store.append_turn(session_id, "iam:alice", turn("secret", "ok"), expected_count=None)
    with pytest.raises(SessionNotFoundError):
        store.get_session(session_id, "iam:mallory")
    with pytest.raises(SessionNotFoundError):
        store.load_history(session_id, "iam:mallory", max_messages=5, max_chars=100)
    with pytest.raises(SessionNotFoundError):
        store.delete_session(session_id, "iam:mallory")
    with pytest.raises(SessionConflictError):
        store.append_turn(session_id, "iam:mallory", turn("x", "y"), expected_count=2)
    assert store.list_sessions("iam:mallory", limit=10, cursor=None).sessions == []
    _, messages = store.get_session(session_id, "iam:alice")
    assert [m.content for m in messages] == ["secret", "ok"]


def test_delete_removes_every_item(store, scan_table, session_table):
    session_id, other = new_session_id(), new_session_id()
    store.append_turn(session_id, "u", turn("q0", "a0"), expected_count=None)
    count = 2
    for i in range(20):  # more than one BatchWriteItem of 25
        store.append_turn(session_id, "u", turn(f"q{i}", f"a{i}"), expected_count=count)
        count += 2
    store.append_turn(other, "u", turn("keep", "me"), expected_count=None)
    store.delete_session(session_id, "u")
    remaining = {item["pk"]["S"] for item in scan_table(session_table)}
    assert remaining == {f"SESSION#{other}"}
    with pytest.raises(SessionNotFoundError):
        store.get_session(session_id, "u")


def test_append_to_deleted_session_conflicts(store):
    session_id = new_session_id()
    store.append_turn(session_id, "u", turn("q", "a"), expected_count=None)
    store.delete_session(session_id, "u")
    with pytest.raises(SessionConflictError):
        store.append_turn(session_id, "u", turn("q2", "a2"), expected_count=2)


def test_expired_session_is_hidden_before_dynamodb_deletes_it(store, clock):
    session_id = new_session_id()
    store.append_turn(session_id, "u", turn("q", "a"), expected_count=None)
    clock.now += 8 * 86_400
    with pytest.raises(SessionNotFoundError):
        store.get_session(session_id, "u")
    assert store.list_sessions("u", limit=10, cursor=None).sessions == []


def test_list_is_newest_first_and_paginates(store, clock):
    ids = []
    for i in range(5):
        clock.now += 1
        session_id = new_session_id()
        ids.append(session_id)
        store.append_turn(session_id, "u", turn(f"t{i}", "a"), expected_count=None, title=f"t{i}")
    clock.now += 1
    store.append_turn(ids[0], "u", turn("again", "a"), expected_count=2)  # now the newest
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_sessions("u", limit=2, cursor=cursor)
        seen += [header.session_id for header in page.sessions]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == [ids[0], ids[4], ids[3], ids[2], ids[1]]


@pytest.mark.parametrize("cursor", ["%%%", "bm90IGpzb24", "e30="])
def test_garbage_cursor_is_a_bad_request(store, cursor):
    with pytest.raises(InvalidRequestError):
        store.list_sessions("u", limit=2, cursor=cursor)


def test_cursor_of_another_owner_is_refused(store, clock):
    for i in range(3):
        clock.now += 1
        store.append_turn(new_session_id(), "iam:alice", turn(f"t{i}", "a"), expected_count=None)
    page = store.list_sessions("iam:alice", limit=1, cursor=None)
    assert page.next_cursor
    with pytest.raises(InvalidRequestError):
        store.list_sessions("iam:mallory", limit=1, cursor=page.next_cursor)
