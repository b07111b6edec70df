"""The local DynamoDB server's transactions: all or nothing, with item-level backups."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.dynamodb import create_session_table
from tests.servers import dynamodb_server

TABLE = "sessions-transactions"


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with dynamodb_server() as url:
        dynamodb = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
        create_session_table(dynamodb, TABLE)
        yield dynamodb


def _put(pk: str, sk: str, **attributes: str) -> dict[str, Any]:
    item = {"pk": {"S": pk}, "sk": {"S": sk}, **{k: {"S": v} for k, v in attributes.items()}}
    return {"Put": {"TableName": TABLE, "Item": item}}


def _everything(client: Any) -> list[dict[str, Any]]:
    items = client.scan(TableName=TABLE, ConsistentRead=True)["Items"]
    return sorted(items, key=lambda item: (item["pk"]["S"], item["sk"]["S"]))


def test_a_cancelled_transaction_leaves_every_item_as_it_was(client):
    client.transact_write_items(
        TransactItems=[_put("S#1", "META", count="2"), _put("S#1", "MSG#0", text="old")]
    )
    before = _everything(client)

    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(
            TransactItems=[
                _put("S#1", "MSG#1", text="new"),  # applied by moto, then rolled back
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "S#1"}, "sk": {"S": "MSG#0"}},
                        "UpdateExpression": "SET #t = :t",
                        "ExpressionAttributeNames": {"#t": "text"},
                        "ExpressionAttributeValues": {":t": {"S": "changed"}},
                    }
                },
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "S#1"}, "sk": {"S": "META"}},
                        "UpdateExpression": "SET #c = :three",
                        "ConditionExpression": "#c = :one",
                        "ExpressionAttributeNames": {"#c": "count"},
                        "ExpressionAttributeValues": {":one": {"S": "1"}, ":three": {"S": "3"}},
                    }
                },
            ]
        )

    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert _everything(client) == before


def test_a_transaction_naming_one_item_twice_changes_nothing(client):
    client.transact_write_items(TransactItems=[_put("S#2", "META", count="1")])
    before = _everything(client)

    with pytest.raises(ClientError) as refused:
        client.transact_write_items(
            TransactItems=[_put("S#2", "META", count="9"), _put("S#2", "META", count="8")]
        )

    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert _everything(client) == before


def test_a_committed_transaction_writes_every_item(client):
    client.transact_write_items(
        TransactItems=[_put("S#3", "META", count="2"), _put("S#3", "MSG#0", text="hi")]
    )

    items = [i for i in _everything(client) if i["pk"]["S"] == "S#3"]
    assert [(i["sk"]["S"], i.get("text", i.get("count"))) for i in items] == [
        ("META", {"S": "2"}),
        ("MSG#0", {"S": "hi"}),
    ]


def test_queries_see_their_partition_in_order_and_the_owner_index_still_answers(client):
    client.transact_write_items(
        TransactItems=[
            _put("S#4", sk, text=sk) for sk in ("MSG#000002", "MSG#000000", "MSG#000001")
        ]
        + [_put("S#5", "MSG#000000", text="other")]
        + [_put("S#4", "META", owner="alice", updated_at="2026-01-01")]
    )

    def query(**kwargs: Any) -> list[str]:
        items = client.query(TableName=TABLE, **kwargs)["Items"]
        return [f"{item['pk']['S']}/{item['sk']['S']}" for item in items]

    key = {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "S#4"}}}
    assert query(**key) == [
        f"S#4/{sk}" for sk in ("META", "MSG#000000", "MSG#000001", "MSG#000002")
    ]
    assert query(**key, ScanIndexForward=False, Limit=2) == ["S#4/MSG#000002", "S#4/MSG#000001"]
    absent = {":pk": {"S": "S#404"}}
    assert query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues=absent) == []
    assert query(
        IndexName="by-owner",
        KeyConditionExpression="#o = :o",
        ExpressionAttributeNames={"#o": "owner"},
        ExpressionAttributeValues={":o": {"S": "alice"}},
    ) == ["S#4/META"]
