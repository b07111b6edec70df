"""Create the session table on the local DynamoDB-compatible server (schema: docs/interfaces.md)."""

from __future__ import annotations

import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from local.dynamodb import create_session_table as create_table_schema
from local.stack.config import LOCAL_AWS_KEY


def ensure_session_table(
    *, endpoint_url: str, table_name: str, region: str, timeout_s: float = 60.0
) -> None:
    """Create the session table with its ``by-owner`` index and TTL, unless it exists.

    Waits for the server to answer first, so it may be called right after the server's
    process started.

    Parameters
    ----------
    endpoint_url
        The DynamoDB-compatible server, e.g. ``http://127.0.0.1:8002``.
    table_name
        Name of the table to create.
    region
        Region name boto3 signs with (any value works locally).
    timeout_s
        How long to wait for the server to answer.

    Raises
    ------
    TimeoutError
        The server did not answer within ``timeout_s``.
    """
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=LOCAL_AWS_KEY,
        aws_secret_access_key=LOCAL_AWS_KEY,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            existing = client.list_tables()["TableNames"]
            break
        except (BotoCoreError, ClientError) as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"DynamoDB at {endpoint_url} did not answer: {exc}") from exc
            time.sleep(0.2)
    if table_name in existing:
        return
    create_table_schema(client, table_name)
