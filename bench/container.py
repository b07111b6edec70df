"""Container overhead benchmark: the same backend called through our server and directly.

Run by hand: ``python bench/container.py`` (``make bench-container``). It starts the scripted
OpenAI-compatible backend (fixed token timing, so that the differences measured are our server's
cost rather than CPU-model noise), our launcher in front of it, and streams the same answer at 1
and 16 concurrent streams, alternating direct and through-server rounds. ``--real`` adds a run
against SmolLM2 behind ``transformers serve`` (noise-dominated on a shared CPU: printed, not used
for the headline). Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from inference_server.launcher import free_port
from local.model_backend import SMOLLM2_GGUF, resolve_local_model

REPO = Path(__file__).resolve().parents[1]

CHAT_PROPERTIES = REPO / "model_artifacts" / "chat" / "serving.properties"
QUESTION = "Describe what a data engineer does in a few sentences."


@dataclass
class StreamResult:
    ttft_s: float
    total_s: float
    tokens: int


@dataclass
class Round:
    path: str
    concurrency: int
    ttft_ms: float
    tokens_per_s: float
    streams: int
    tokens: int = 0
    cpu_s: float = 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process, from /proc (0 where there is no /proc)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env["LOG_LEVEL"] = "WARNING"
    return env


def _wait(url: str, process: subprocess.Popen[bytes], timeout_s: float = 300.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}:\n{stderr}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    try:
        last = httpx.get(url, timeout=2).text
    except httpx.HTTPError as exc:
        last = repr(exc)
    raise TimeoutError(f"{url} not ready within {timeout_s} s; last answer: {last}")


@contextmanager
def _process(command: list[str], ready_url: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, cwd=REPO, env={**_env(), **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        _wait(ready_url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


async def _direct(client: httpx.AsyncClient, url: str, model: str, prompt: str, n: int) -> Any:
    body = {"model": model, "prompt": prompt, "max_tokens": n, "stream": True, "temperature": 0}
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.endswith("[DONE]"):
                continue
            choices = json.loads(line[5:]).get("choices") or [{}]
            if choices[0].get("text"):
                tokens += 1
                if tokens == 1:
                    ttft = time.perf_counter() - started
    return StreamResult(ttft, time.perf_counter() - started, tokens)


async def _ours(client: httpx.AsyncClient, url: str, n: int) -> StreamResult:
    body = {
        "inputs": QUESTION,
        "parameters": {"max_new_tokens": n, "temperature": 0, "no_retrieval": True},
        "stream": True,
    }
    started = time.perf_counter()
    ttft = 0.0
    tokens = 0
    async with client.stream("POST", f"{url}/invocations", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith('{"token"'):
                tokens += 1
                if tokens == 1:
                    ttft = time.perf_counter() - started
    return StreamResult(ttft, time.perf_counter() - started, tokens)


async def _round(path: str, concurrency: int, call: Any, pid: int | None = None) -> Round:
    cpu_before = _cpu_seconds(pid)
    started = time.perf_counter()
    results: list[StreamResult] = await asyncio.gather(*(call() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return Round(
        path=path,
        concurrency=concurrency,
        ttft_ms=statistics.median(r.ttft_s for r in results) * 1000,
        tokens_per_s=sum(r.tokens for r in results) / wall,
        streams=len(results),
        tokens=sum(r.tokens for r in results),
        cpu_s=_cpu_seconds(pid) - cpu_before,
    )


async def _measure(
    backend_url: str,
    server_url: str,
    model: str,
    prompt: str,
    tokens: int,
    rounds: int,
    server_pid: int | None = None,
) -> dict[int, dict[str, list[Round]]]:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    measured: dict[int, dict[str, list[Round]]] = {}
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        for concurrency in (1, 16):
            per_path: dict[str, list[Round]] = {"direct": [], "server": []}
            # Warm-up: connection pools, tokenizer caches, the backend's first request.
            await _round(
                "direct", concurrency, lambda: _direct(client, backend_url, model, prompt, tokens)
            )
            await _round("server", concurrency, lambda: _ours(client, server_url, tokens))
            for _ in range(rounds):
                per_path["direct"].append(
                    await _round(
                        "direct",
                        concurrency,
                        lambda: _direct(client, backend_url, model, prompt, tokens),
                    )
                )
                per_path["server"].append(
                    await _round(
                        "server", concurrency, lambda: _ours(client, server_url, tokens), server_pid
                    )
                )
            measured[concurrency] = per_path
    return measured


def _summarise(label: str, measured: dict[int, dict[str, list[Round]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    print(f"\n{label}")
    print(f"{'streams':>7} {'path':>7} {'TTFT ms (median)':>17} {'tokens/s (all streams)':>23}")
    for concurrency, per_path in measured.items():
        row: dict[str, float] = {}
        for path in ("direct", "server"):
            ttft = statistics.median(r.ttft_ms for r in per_path[path])
            rate = statistics.median(r.tokens_per_s for r in per_path[path])
            row[f"{path}_ttft_ms"] = round(ttft, 2)
            row[f"{path}_tokens_per_s"] = round(rate, 1)
            print(f"{concurrency:>7} {path:>7} {ttft:>17.2f} {rate:>23.1f}")
        row["throughput_overhead_pct"] = round(
            (row["direct_tokens_per_s"] - row["server_tokens_per_s"])
            / row["direct_tokens_per_s"]
            * 100,
            2,
        )
        row["ttft_overhead_ms"] = round(row["server_ttft_ms"] - row["direct_ttft_ms"], 2)
        served = per_path["server"]
        cpu = sum(r.cpu_s for r in served)
        # Our server's own CPU cost, which timing on a shared, loaded CPU cannot isolate.
        per_token = cpu / max(sum(r.tokens for r in served), 1)
        row["server_cpu_us_per_token"] = round(per_token * 1e6, 1)
        row["server_cpu_ms_per_request"] = round(cpu / sum(r.streams for r in served) * 1e3, 2)
        summary[f"c{concurrency}"] = row
    return summary


def _scripted_run(smollm2_dir: Path, tokens: int, rounds: int, token_delay_s: float) -> Any:
    backend_port, server_port = free_port(), free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    server_url = f"http://127.0.0.1:{server_port}"
    script = {
        "default": {
            "tokens": [f" w{n}" for n in range(tokens)],
            "first_token_delay_s": 0.02,
            "token_delay_s": token_delay_s,
        }
    }
    backend = [sys.executable, "-m", "local.scripted_backend", "--port", str(backend_port)]
    server = [
        sys.executable, "-m", "inference_server", "serve", "--properties", str(CHAT_PROPERTIES),
        "--host", "127.0.0.1", "--port", str(server_port), "--backend", "external",
        "--backend-url", backend_url,
    ]  # fmt: skip
    server_env = {
        "OPTION_MODEL_ID": str(smollm2_dir),
        "OPTION_TOKENIZER": str(smollm2_dir),
        "OPTION_PROMPT_TEMPLATE": "tokenizer",
        "OPTION_RETRIEVER": "none",
    }
    with (
        _process(backend, f"{backend_url}/health"),
        _process(server, f"{server_url}/ping", **server_env) as server_process,
    ):
        httpx.put(f"{backend_url}/_script", json=script).raise_for_status()
        return asyncio.run(
            _measure(
                backend_url,
                server_url,
                "scripted-model",
                QUESTION,
                tokens,
                rounds,
                server_process.pid,
            )
        )


def _real_run(smollm2_dir: Path, tokens: int, rounds: int) -> Any:
    server_port = free_port()
    server_url = f"http://127.0.0.1:{server_port}"
    backend_port = free_port()
    backend_url = f"http://127.0.0.1:{backend_port}"
    backend = [
        sys.executable, "-m", "local.model_backend", "--model", str(smollm2_dir),
        "--port", str(backend_port),
    ]  # fmt: skip
    server = [
        sys.executable, "-m", "inference_server", "serve", "--properties", str(CHAT_PROPERTIES),
        "--host", "127.0.0.1", "--port", str(server_port), "--backend", "external",
        "--backend-url", backend_url,
    ]  # fmt: skip
    server_env = {
        "OPTION_MODEL_ID": str(smollm2_dir),
        "OPTION_TOKENIZER": str(smollm2_dir),
        "OPTION_SERVED_MODEL_NAME": str(smollm2_dir),
        "OPTION_PROMPT_TEMPLATE": "tokenizer",
        "OPTION_RETRIEVER": "none",
    }
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    prompt = str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
        )
    )
    with (
        _process(backend, f"{backend_url}/health"),
        _process(server, f"{server_url}/ping", **server_env) as server_process,
    ):
        return asyncio.run(
            _measure(
                backend_url,
                server_url,
                str(smollm2_dir),
                prompt,
                tokens,
                rounds,
                server_process.pid,
            )
        )


def main() -> None:
    """Run the benchmark and print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=64, help="tokens per stream")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--token-delay-s", type=float, default=0.01, help="scripted decode step")
    parser.add_argument("--real", action="store_true", help="also run SmolLM2 (slow, noisy)")
    parser.add_argument(
        "--tokenizer",
        type=Path,
        help="tokenizer dir for the scripted run (default: the converted SmolLM2 dir)",
    )
    args = parser.parse_args()
    smollm2_dir = (
        args.tokenizer or resolve_local_model(SMOLLM2_GGUF, REPO / ".cache" / "models")
    ).resolve()

    scripted = _summarise(
        f"scripted backend ({args.tokens} tokens/stream, {args.token_delay_s * 1000:.0f} ms/token)",
        _scripted_run(smollm2_dir, args.tokens, args.rounds, args.token_delay_s),
    )
    result: dict[str, Any] = {
        "throughput_overhead_pct": max(row["throughput_overhead_pct"] for row in scripted.values()),
        "ttft_overhead_ms": max(row["ttft_overhead_ms"] for row in scripted.values()),
        "server_cpu_us_per_token": scripted["c16"]["server_cpu_us_per_token"],
        "server_cpu_ms_per_request": scripted["c1"]["server_cpu_ms_per_request"],
        "load_average_1m": round(os.getloadavg()[0], 2),
        "backend": "scripted",
        "tokens_per_stream": args.tokens,
        "rounds": args.rounds,
        "scripted": scripted,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
    }
    if args.real:
        result["smollm2"] = _summarise(
            "SmolLM2-135M behind transformers serve (CPU; serialised generation)",
            _real_run(smollm2_dir, 8, 2),
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
