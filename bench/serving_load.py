"""Streaming load generator: N concurrent streams, aggregate tokens/s, TTFT and inter-token latency.

Why our own code: the serving benchmarks we know (vLLM's `benchmark_serving`, GenAI-Perf) need
their engine's tree or a Triton install, and none speaks our container's `/invocations`
jsonlines stream. This module imports only httpx and the standard library, so it can run in
a process of its own, away from the server's interpreter lock.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.harness import percentile

__all__ = ["RequestTiming", "TokenCount", "percentile", "run_load", "summarize"]


@dataclass
class TokenCount:
    """Set by a stream when the response states how many tokens it generated."""

    value: int | None = None


@dataclass
class RequestTiming:
    """Timestamps of one streamed request (``time.perf_counter`` seconds)."""

    started: float
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0
    finished: float = 0.0


def summarize(timings: list[RequestTiming], concurrency: int) -> dict[str, Any]:
    """Reduce request timings to the benchmark's figures.

    Parameters
    ----------
    timings
        One entry per completed request.
    concurrency
        Concurrent streams the load ran with.

    Returns
    -------
    dict
        ``concurrency``, ``requests``, ``tokens``, ``wall_s``, ``tokens_per_s`` (all tokens over
        the wall time from the first request to the last byte), ``ttft_ms_p50/p99``,
        ``itl_ms_p50/p99`` (gaps between streamed chunks) and ``stream_decode_tokens_per_s``
        (chunks per second after the first chunk, median over requests).
    """
    started = min(t.started for t in timings)
    finished = max(t.finished for t in timings)
    tokens = sum(t.tokens for t in timings)
    ttfts = [(t.chunk_times[0] - t.started) * 1e3 for t in timings if t.chunk_times]
    gaps = [
        (later - earlier) * 1e3
        for t in timings
        for earlier, later in itertools.pairwise(t.chunk_times)
    ]
    decode_rates = [
        (len(t.chunk_times) - 1) / (t.chunk_times[-1] - t.chunk_times[0])
        for t in timings
        if len(t.chunk_times) > 1 and t.chunk_times[-1] > t.chunk_times[0]
    ]
    wall = finished - started
    return {
        "concurrency": concurrency,
        "requests": len(timings),
        "tokens": tokens,
        "wall_s": round(wall, 4),
        "tokens_per_s": round(tokens / wall, 2) if wall > 0 else math.nan,
        "ttft_ms_p50": round(percentile(ttfts, 50), 2),
        "ttft_ms_p99": round(percentile(ttfts, 99), 2),
        "itl_ms_p50": round(percentile(gaps, 50), 3),
        "itl_ms_p99": round(percentile(gaps, 99), 3),
        "stream_decode_tokens_per_s": round(percentile(decode_rates, 50), 2),
    }


async def run_load(
    start_request: Callable[[TokenCount], AsyncIterator[int]],
    concurrency: int,
    requests: int,
) -> dict[str, Any]:
    """Run ``requests`` requests over ``concurrency`` streams and summarize them.

    Parameters
    ----------
    start_request
        Starts one request given a :class:`TokenCount` to fill; yields per chunk the tokens it
        carries (0 when unknown, then the count must be filled in).
    concurrency
        Streams issuing requests back to back.
    requests
        Total requests (at least ``concurrency``, so every stream is busy at the start).

    Returns
    -------
    dict
        See :func:`summarize`.
    """
    remaining = itertools.count()
    timings: list[RequestTiming] = []

    async def stream_worker() -> None:
        while next(remaining) < requests:
            count = TokenCount()
            timing = RequestTiming(started=time.perf_counter())
            chunk_tokens = 0
            async for carried in start_request(count):
                timing.chunk_times.append(time.perf_counter())
                chunk_tokens += carried
            timing.finished = time.perf_counter()
            timing.tokens = count.value if count.value is not None else chunk_tokens
            timings.append(timing)

    await asyncio.gather(*(stream_worker() for _ in range(concurrency)))
    return summarize(timings, concurrency)


def openai_completions_stream(
    client: httpx.AsyncClient, url: str, prompt: str, max_new_tokens: int, model: str
) -> Callable[[TokenCount], AsyncIterator[int]]:
    """Request factory for an OpenAI-compatible ``/v1/completions`` SSE stream."""

    async def start(count: TokenCount) -> AsyncIterator[int]:
        body = {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    count.value = chunk["usage"]["completion_tokens"]
                if chunk.get("choices") and chunk["choices"][0].get("text"):
                    yield 0

    return start


def container_invocations_stream(
    client: httpx.AsyncClient, url: str, prompt: str, max_new_tokens: int
) -> Callable[[TokenCount], AsyncIterator[int]]:
    """Request factory for our container's ``POST /invocations`` jsonlines stream."""

    async def start(count: TokenCount) -> AsyncIterator[int]:
        body = {
            "inputs": prompt,
            "parameters": {"max_new_tokens": max_new_tokens, "no_retrieval": True},
            "stream": True,
        }
        async with client.stream("POST", f"{url}/invocations", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise RuntimeError(f"container stream failed: {event['error']}")
                if "token" in event:
                    yield 0
                elif "details" in event:
                    count.value = int(event["details"]["generated_tokens"])

    return start


async def run_http_loads(
    url: str,
    protocol: str,
    prompt: str,
    max_new_tokens: int,
    concurrencies: list[int],
    min_requests: int,
    model: str,
) -> list[dict[str, Any]]:
    """Warm up once, then run one load per concurrency against ``url``.

    Parameters
    ----------
    url
        Server base URL.
    protocol
        ``"openai"`` (``/v1/completions``) or ``"container"`` (``/invocations``).
    prompt
        The fixed prompt.
    max_new_tokens
        Tokens per request.
    concurrencies
        Stream counts to run, in order.
    min_requests
        Fewest requests per load (a load has ``max(concurrency, min_requests)``).
    model
        Model name for the OpenAI protocol.

    Returns
    -------
    list[dict]
        One :func:`summarize` result per concurrency.
    """
    limits = httpx.Limits(max_connections=max(concurrencies) + 8, max_keepalive_connections=None)
    timeout = httpx.Timeout(600.0, connect=10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        if protocol == "openai":
            start = openai_completions_stream(client, url, prompt, max_new_tokens, model)
        elif protocol == "container":
            start = container_invocations_stream(client, url, prompt, max_new_tokens)
        else:
            raise ValueError(f"unknown protocol {protocol!r}")
        await run_load(start, concurrency=1, requests=1)
        results = []
        for concurrency in concurrencies:
            requests = max(concurrency, min_requests)
            results.append(await run_load(start, concurrency=concurrency, requests=requests))
        return results


def main(argv: list[str] | None = None) -> int:
    """Run HTTP loads and print their results as one JSON line (used as a subprocess).

    Parameters
    ----------
    argv
        Arguments; see ``--help``.

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--protocol", choices=["openai", "container"], required=True)
    parser.add_argument("--prompt-file", required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument("--model", default="bench")
    args = parser.parse_args(argv)
    with open(args.prompt_file, encoding="utf-8") as prompt_file:
        prompt = prompt_file.read()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    results = _run_fast(
        run_http_loads(
            args.url,
            args.protocol,
            prompt,
            args.max_new_tokens,
            concurrencies,
            args.min_requests,
            args.model,
        )
    )
    print(json.dumps(results))
    return 0


def _run_fast(coroutine: Any) -> Any:
    """Run on uvloop where installed (as uvicorn does), else on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
