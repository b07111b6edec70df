"""Fault-injecting HTTP proxy in front of a DynamoDB-compatible server, for failure-path tests.

The local DynamoDB server serves one request at a time, so DynamoDB's own transient failures
(transaction conflicts, throttling, 500s, slow answers, partially processed batches) never
happen there. This proxy forwards the DynamoDB JSON protocol unchanged and, per operation
(``X-Amz-Target``), answers the next N requests with a scripted failure instead. No library
fits: moto injects no faults, and a generic HTTP fault proxy (toxiproxy) speaks TCP, not
DynamoDB's error documents.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Fault", "FaultKind", "build_app", "main"]

FaultKind = Literal[
    "transaction_conflict",
    "throughput_exceeded",
    "internal_error",
    "slow",
    "unprocessed_items",
]
_TYPE_PREFIX = "com.amazonaws.dynamodb.v20120810#"
_FORWARDED_HEADERS = ("content-type", "x-amz-target", "authorization", "x-amz-date")


class Fault(BaseModel):
    """One scripted failure for an operation, applied to its next ``times`` requests.

    ``transaction_conflict``: ``TransactionCanceledException`` whose reasons are all
    ``TransactionConflict`` (400), not forwarded. ``throughput_exceeded``:
    ``ProvisionedThroughputExceededException`` (400), not forwarded. ``internal_error``:
    ``InternalServerError`` (500), not forwarded. ``slow``: forwarded after ``delay_s``
    (DynamoDB still applies a write whose caller already gave up). ``unprocessed_items``
    (``BatchWriteItem`` only): 200 with every request returned as ``UnprocessedItems``,
    not forwarded.
    """

    model_config = ConfigDict(extra="forbid")

    operation: str = Field(description="e.g. TransactWriteItems, GetItem, Query, BatchWriteItem")
    kind: FaultKind
    times: int = Field(default=1, ge=1)
    delay_s: float = Field(default=0.0, ge=0)


class _State:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.forwarded: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def take(self, operation: str) -> Fault | None:
        for index, fault in enumerate(self.faults):
            if fault.operation == operation:
                if fault.times == 1:
                    del self.faults[index]
                else:
                    self.faults[index] = fault.model_copy(update={"times": fault.times - 1})
                self.injected[f"{operation}:{fault.kind}"] += 1
                return fault
        return None


def _error(status: int, error_type: str, message: str, **extra: Any) -> Response:
    body = {"__type": _TYPE_PREFIX + error_type, "message": message, **extra}
    return Response(json.dumps(body), status_code=status, media_type="application/x-amz-json-1.0")


def _injected(fault: Fault, body: dict[str, Any]) -> Response | None:
    if fault.kind == "transaction_conflict":
        reasons = [
            {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}
            for _ in body.get("TransactItems", [None])
        ]
        return _error(
            400,
            "TransactionCanceledException",
            "Transaction cancelled, please refer cancellation reasons for specific reasons",
            CancellationReasons=reasons,
        )
    if fault.kind == "throughput_exceeded":
        return _error(
            400,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        )
    if fault.kind == "internal_error":
        return _error(500, "InternalServerError", "Internal server error (injected)")
    if fault.kind == "unprocessed_items":
        return Response(
            json.dumps({"UnprocessedItems": body.get("RequestItems", {})}),
            media_type="application/x-amz-json-1.0",
        )
    return None  # slow: forwarded after the delay


def build_app(upstream: str) -> FastAPI:
    """Build the proxy.

    Parameters
    ----------
    upstream
        URL of the DynamoDB-compatible server, e.g. ``http://127.0.0.1:8002``.

    Returns
    -------
    FastAPI
        ``POST /`` (the DynamoDB API), ``PUT|GET|DELETE /_faults`` (a list of
        :class:`Fault`; PUT appends), ``GET /_stats`` (forwarded and injected counts).
    """
    state = _State(upstream)
    app = FastAPI(title="DynamoDB fault proxy", docs_url=None, redoc_url=None)
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0))
    app.state.proxy = state

    @app.put("/_faults")
    async def add_faults(faults: list[Fault]) -> dict[str, Any]:
        state.faults.extend(faults)
        return {"faults": [f.model_dump() for f in state.faults]}

    @app.get("/_faults")
    async def get_faults() -> dict[str, Any]:
        return {"faults": [f.model_dump() for f in state.faults]}

    @app.delete("/_faults")
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @app.get("/_stats")
    async def stats() -> dict[str, Any]:
        return {"forwarded": dict(state.forwarded), "injected": dict(state.injected)}

    @app.post("/")
    async def dynamodb(request: Request) -> Response:
        raw = await request.body()
        target = request.headers.get("x-amz-target", "")
        operation = target.rpartition(".")[2]
        fault = state.take(operation)
        if fault is not None:
            try:
                body = json.loads(raw) if raw else {}
            except ValueError:
                body = {}
            answer = _injected(fault, body if isinstance(body, dict) else {})
            if answer is not None:
                return answer
            await asyncio.sleep(fault.delay_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_HEADERS}
        try:
            upstream = await client.post(state.upstream + "/", content=raw, headers=headers)
        except httpx.HTTPError as exc:
            return JSONResponse({"message": f"upstream unreachable: {exc!r}"}, status_code=502)
        state.forwarded[operation] += 1
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type", "application/x-amz-json-1.0"),
        )

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the proxy under uvicorn (``python -m local.dynamodb_fault_proxy``)."""
    parser = argparse.ArgumentParser(
        prog="python -m local.dynamodb_fault_proxy", description=__doc__
    )
    parser.add_argument("--upstream", default="http://127.0.0.1:8002")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(args.upstream), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
