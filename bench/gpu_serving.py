"""GPU serving benchmark: seed baseline vs continuous batching, direct and behind our container.

Run on the GPU machine: ``python -m bench.gpu_serving`` (GPT-NeoX-20B shape, random bf16
weights). ``python -m bench.gpu_serving --smoke`` runs the same path on the CPU with a tiny
model. Prints a table, then one JSON line with every figure; with ``OUT`` set, also writes
``$OUT/gpu_serving.json`` and ``$OUT/gpu_serving.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import torch

from bench.gpu_backend import (
    NEOX_20B_SHAPE,
    TINY_SHAPE,
    ContinuousBatchingEngine,
    ContinuousBatchingSettings,
    SeedStyleEngine,
    build_backend_app,
    build_random_model,
    build_word_tokenizer,
    fixed_prompt,
)
from bench.harness import Target, add_gate_argument, child_env, free_port, judge
from bench.serving_load import TokenCount, run_load

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "gpt-neox-20b-shape-random"
TARGETS = (Target("server_overhead_pct_median", 3.0),)


@dataclass(frozen=True)
class RunPlan:
    """What one benchmark run measures."""

    device: str
    dtype: torch.dtype
    shape: dict[str, Any]
    prompt_tokens: int
    max_new_tokens: int
    concurrencies: tuple[int, ...]
    min_requests: int
    copy_bytes: int
    cb_settings: ContinuousBatchingSettings
    with_container: bool
    variants: tuple[tuple[str, ContinuousBatchingSettings], ...] = ()
    rounds: int = 3
    with_seed: bool = True


def plan_from_args(args: argparse.Namespace) -> RunPlan:
    """Turn command-line arguments into a :class:`RunPlan` (``--smoke`` picks CPU sizes)."""
    concurrencies = tuple(int(c) for c in args.concurrency.split(","))
    cb_settings = ContinuousBatchingSettings(
        use_cuda_graph=None if args.cuda_graphs == "auto" else args.cuda_graphs == "on",
        use_async_batching=None if args.async_batching == "auto" else args.async_batching == "on",
        block_size=args.block_size,
        max_memory_percent=args.kv_memory_fraction,
        # transformers pads the KV read to this many tokens so CUDA graphs can be reused; its
        # preset (16384) makes every decode step attend over 16k slots, even at one stream.
        extra={"kv_padding_interval_size": args.kv_padding} if args.kv_padding else {},
    )
    variants: tuple[tuple[str, ContinuousBatchingSettings], ...] = (
        ("async_batching", replace(cb_settings, use_async_batching=True)),
        ("kv_padding_preset", replace(cb_settings, extra={})),
    )
    if args.variant_set == "batch1":
        # Batch-1 decode: pad the query to 8 tokens instead of 64, then also overlap the CPU
        # step with async batching, then add torch.compile on top.
        small_q = replace(
            cb_settings, extra={**cb_settings.extra, "q_padding_interval_size": args.q_padding}
        )
        variants = (
            ("q_padding_small", small_q),
            ("q_padding_small_async", replace(small_q, use_async_batching=True)),
            (
                "q_padding_small_compiled",
                replace(small_q, extra={**small_q.extra, "default_compile_level": 1}),
            ),
        )
    if args.smoke:
        return RunPlan(
            device="cpu",
            dtype=torch.float32,
            shape=TINY_SHAPE,
            prompt_tokens=16,
            max_new_tokens=4,
            concurrencies=concurrencies if args.concurrency != "1,16,64" else (1, 4),
            min_requests=2,
            copy_bytes=1 << 24,
            cb_settings=ContinuousBatchingSettings(block_size=32, max_memory_percent=0.1),
            with_container=not args.no_container,
            rounds=min(args.rounds, 2),
            with_seed=not args.no_seed,
            variants=(("no_cuda_graphs", ContinuousBatchingSettings(block_size=32)),)
            if args.variants
            else (),
        )
    return RunPlan(
        device="cuda",
        dtype=torch.bfloat16,
        shape=NEOX_20B_SHAPE,
        prompt_tokens=args.prompt_tokens,
        max_new_tokens=args.max_new_tokens,
        concurrencies=concurrencies,
        min_requests=args.min_requests,
        copy_bytes=1 << 32,
        cb_settings=cb_settings,
        with_container=not args.no_container,
        variants=variants if args.variants else (),
        rounds=args.rounds,
        with_seed=not args.no_seed,
    )


class Report:
    """Prints progress lines and keeps them for the log file."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.started = time.perf_counter()

    def say(self, message: str) -> None:
        """Print ``message`` with the seconds since start, and keep it."""
        line = f"[{time.perf_counter() - self.started:7.1f}s] {message}"
        print(line, flush=True)
        self.lines.append(line)


def measure_copy_bandwidth(device: str, nbytes: int, repeats: int = 20) -> float:
    """Measure memory bandwidth in bytes/s with a device-to-device copy, counting read + write.

    Parameters
    ----------
    device
        ``"cuda"`` or ``"cpu"``.
    nbytes
        Buffer size; far above the last-level cache so the copy streams through memory.
    repeats
        Timed copies; the median is used.

    Returns
    -------
    float
        ``2 * nbytes / median_copy_seconds``.
    """
    # Random bytes, not zeros: compressed or zero-skipping paths must not flatter the figure.
    source = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    times: list[float] = []
    for index in range(repeats + 3):
        if device == "cuda":
            event_class: Any = torch.cuda.Event
            begin, end = event_class(enable_timing=True), event_class(enable_timing=True)
            begin.record()
            target.copy_(source)
            end.record()
            end.synchronize()
            elapsed = begin.elapsed_time(end) / 1e3
        else:
            tick = time.perf_counter()
            target.copy_(source)
            elapsed = time.perf_counter() - tick
        if index >= 3:
            times.append(elapsed)
    if not torch.equal(target[:4096], source[:4096]) or not torch.equal(
        target[-4096:], source[-4096:]
    ):
        raise RuntimeError("bandwidth copy produced wrong bytes")
    del source, target
    return 2 * nbytes / statistics.median(times)


def weight_bytes_per_decode_step(model: Any) -> int:
    """Bytes of weights one batch-1 decode step must read: all parameters but the input embedding.

    The input embedding is gathered one row per token, not streamed, so it is left out.
    """
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    return int(total - embedding.numel() * embedding.element_size())


async def wait_until_ready(
    url: str, process: asyncio.subprocess.Process | None, limit_s: float
) -> None:
    """Poll ``url`` until it answers 200, failing early if ``process`` exits."""
    deadline = time.monotonic() + limit_s
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if process is not None and process.returncode is not None:
                raise RuntimeError(f"server exited with {process.returncode} before {url} answered")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {limit_s} s")


async def run_http_load_process(
    url: str, protocol: str, prompt_file: Path, plan: RunPlan
) -> list[dict[str, Any]]:
    """Run :mod:`bench.serving_load` in its own process against ``url`` and parse its results."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.serving_load",
        "--url",
        url,
        "--protocol",
        protocol,
        "--prompt-file",
        str(prompt_file),
        "--max-new-tokens",
        str(plan.max_new_tokens),
        "--concurrency",
        ",".join(map(str, plan.concurrencies)),
        "--min-requests",
        str(plan.min_requests),
        "--model",
        MODEL_NAME,
        cwd=str(REPO_ROOT),
        env=child_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        tail = stderr.decode()[-2000:]
        raise RuntimeError(f"load generator failed ({process.returncode}): {tail}")
    results: list[dict[str, Any]] = json.loads(stdout.decode().strip().splitlines()[-1])
    return results


def container_server_command(properties: Path, backend_url: str, port: int) -> list[str]:
    """The container's own entry point (what the image's ``serve`` runs), external backend."""
    return [
        sys.executable,
        "-m",
        "inference_server",
        "serve",
        "--properties",
        str(properties),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend",
        "external",
        "--backend-url",
        backend_url,
    ]


def write_container_properties(tokenizer_dir: Path, plan: RunPlan) -> Path:
    """serving.properties for the chat role: our tokenizer's chat template, no retrieval."""
    properties = tokenizer_dir / "serving.properties"
    cap = max(plan.max_new_tokens, 1024)
    properties.write_text(
        "option.role=chat\n"
        f"option.model_id={tokenizer_dir}\n"
        f"option.tokenizer={tokenizer_dir}\n"
        "option.backend=external\n"
        f"option.served_model_name={MODEL_NAME}\n"
        "option.retriever=none\n"
        "option.prompt_template=tokenizer\n"
        f"option.max_new_tokens_cap={cap}\n"
        f"option.max_model_len={plan.shape['max_position_embeddings']}\n",
        encoding="utf-8",
    )
    return properties


async def start_container_server(
    backend_url: str, tokenizer_dir: Path, plan: RunPlan, report: Report
) -> tuple[asyncio.subprocess.Process, str, Path]:
    """Start our container server, unmodified, in front of the backend; wait for ``/ping``."""
    port = free_port()
    properties = write_container_properties(tokenizer_dir, plan)
    log_fd, log_name = tempfile.mkstemp(prefix="container-server-", suffix=".log")
    log_path = Path(log_name)
    try:
        process = await asyncio.create_subprocess_exec(
            *container_server_command(properties, backend_url, port),
            cwd=str(REPO_ROOT),
            env=child_env(LOG_LEVEL="warning"),
            stdout=log_fd,
            stderr=subprocess.STDOUT,
        )
    finally:
        os.close(log_fd)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_ready(f"{url}/ping", process, limit_s=120)
    except (RuntimeError, TimeoutError):
        await stop_process(process)
        log_tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-3000:]
        report.say("container server log tail:\n" + log_tail)
        raise
    report.say(f"container server ready at {url}")
    return process, url, log_path


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """Terminate ``process`` and wait for it, killing it after 10 s."""
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout=10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def serve_in_background(app: Any, port: int) -> tuple[Any, asyncio.Task[None]]:
    """Serve ``app`` with uvicorn on this event loop (the engine's callbacks land on it too)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    return server, task


def seed_request_factory(
    engine: SeedStyleEngine, prompt_ids: list[int], max_new_tokens: int
) -> Callable[[TokenCount], AsyncIterator[int]]:
    """Requests to the seed-style engine; each released text piece is one streamed chunk."""

    async def start(count: TokenCount) -> AsyncIterator[int]:
        async for _piece in engine.stream_text(prompt_ids, max_new_tokens):
            yield 0
        # generate() ran with min_new_tokens == max_new_tokens, so the count is exact.
        count.value = max_new_tokens

    return start


def direct_request_factory(
    engine: ContinuousBatchingEngine, prompt_ids: list[int], max_new_tokens: int
) -> Callable[[TokenCount], AsyncIterator[int]]:
    """Requests to the continuous-batching engine in-process, no HTTP."""

    async def start(count: TokenCount) -> AsyncIterator[int]:
        async for new_ids in engine.stream(prompt_ids, max_new_tokens):
            yield len(new_ids)

    return start


async def measure_in_process(
    plan: RunPlan,
    model: Any,
    tokenizer: Any,
    tokenizer_dir: Path,
    prompt: str,
    report: Report,
) -> dict[str, Any]:
    """Run every configuration that needs the model in this process; return rows and settings."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    rows: dict[str, list[dict[str, Any]]] = {}
    extra: dict[str, Any] = {}

    engine = ContinuousBatchingEngine(
        model,
        plan.cb_settings,
        workload=(plan.prompt_tokens + 64, plan.max_new_tokens, max(plan.concurrencies)),
    )
    extra["cb_warmup_s"] = round(engine.start(warmup=plan.device == "cuda"), 2)
    extra["cb_config"] = engine.resolved_config()
    report.say(f"continuous batching ready: {extra['cb_config']} warmup {extra['cb_warmup_s']} s")
    try:
        direct_start = direct_request_factory(engine, prompt_ids, plan.max_new_tokens)
        await run_load(direct_start, concurrency=min(4, max(plan.concurrencies)), requests=4)
        rows["direct"] = []
        for concurrency in plan.concurrencies:
            result = await run_load(direct_start, concurrency, max(concurrency, plan.min_requests))
            report.say(f"direct     streams={concurrency:3d} {_brief(result)}")
            rows["direct"].append(result)
        if plan.device == "cuda":
            extra["gpu_memory_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)

        port = free_port()
        backend_url = f"http://127.0.0.1:{port}"
        app = build_backend_app(engine, tokenizer, MODEL_NAME)
        server, server_task = await serve_in_background(app, port)
        prompt_file = tokenizer_dir / "prompt.txt"
        prompt_file.write_text(prompt, encoding="utf-8")
        try:
            http_rows, extra["interleaved"] = await measure_interleaved(
                backend_url, tokenizer_dir, prompt_file, plan, report
            )
            rows.update(http_rows)
            if not plan.with_container:
                extra["container_not_measured"] = "skipped by --no-container"
            elif "container" not in rows:
                extra["container_not_measured"] = extra["interleaved"].pop(
                    "error", "container rounds failed"
                )
        finally:
            server.should_exit = True
            await server_task
    finally:
        engine.stop()
    gc.collect()
    if plan.device == "cuda":
        torch.cuda.empty_cache()
    if plan.variants:
        extra["variants"] = await measure_variants(plan, model, prompt_ids, report)

    if plan.with_seed:
        rows["seed"] = await measure_seed(plan, model, tokenizer, prompt_ids, report)
    return {"rows": rows, **extra}


async def measure_seed(
    plan: RunPlan, model: Any, tokenizer: Any, prompt_ids: list[int], report: Report
) -> list[dict[str, Any]]:
    """Rows of the seed-style engine (one request at a time), then free its memory."""
    seed = SeedStyleEngine(model, tokenizer)
    seed_start = seed_request_factory(seed, prompt_ids, plan.max_new_tokens)
    await run_load(seed_request_factory(seed, prompt_ids, 4), concurrency=1, requests=1)
    rows: list[dict[str, Any]] = []
    for concurrency in plan.concurrencies:
        result = await run_load(seed_start, concurrency, max(concurrency, plan.min_requests))
        report.say(f"seed       streams={concurrency:3d} {_brief(result)}")
        rows.append(result)
    gc.collect()
    if plan.device == "cuda":
        torch.cuda.empty_cache()
    return rows


async def measure_variants(
    plan: RunPlan, model: Any, prompt_ids: list[int], report: Report
) -> dict[str, Any]:
    """Time other continuous-batching settings in-process at one and at the top stream count.

    A variant that fails is recorded with its error: it must not cost the main figures.
    """
    results: dict[str, Any] = {}
    top = max(plan.concurrencies)
    for name, settings in plan.variants:
        entry: dict[str, Any] = {"settings": json.loads(json.dumps(asdict(settings), default=str))}
        engine: ContinuousBatchingEngine | None = None
        try:
            engine = ContinuousBatchingEngine(
                model, settings, workload=(plan.prompt_tokens + 64, plan.max_new_tokens, top)
            )
            engine.start(warmup=plan.device == "cuda")
            entry["cb_config"] = engine.resolved_config()
            start = direct_request_factory(engine, prompt_ids, plan.max_new_tokens)
            await run_load(start, concurrency=min(4, top), requests=4)
            entry["rows"] = []
            for concurrency in sorted({1, top}):
                result = await run_load(start, concurrency, max(concurrency, plan.min_requests))
                report.say(f"variant {name:<18} streams={concurrency:3d} {_brief(result)}")
                entry["rows"].append(result)
        except Exception as error:  # noqa: BLE001 - a failed variant is a finding, not a crash
            entry["error"] = f"{type(error).__name__}: {error}"[:1000]
            report.say(f"variant {name} failed: {entry['error']}")
        finally:
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.stop()
            gc.collect()
            if plan.device == "cuda":
                torch.cuda.empty_cache()
        results[name] = entry
    return results


async def measure_interleaved(
    backend_url: str, tokenizer_dir: Path, prompt_file: Path, plan: RunPlan, report: Report
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """``backend_http`` and ``container`` rows, interleaved for ``plan.rounds`` rounds.

    One round runs the backend's own HTTP endpoint, then the same load through our container
    server (started once). Rows report, per concurrency, the median of each figure over the
    rounds; the second value holds every round and the spread of the overhead at each
    concurrency, so a judgement on the median can see how far single runs stray from it.
    """
    process: asyncio.subprocess.Process | None = None
    url = log_path = None
    info: dict[str, Any] = {"rounds": plan.rounds}
    if plan.with_container:
        try:
            process, url, log_path = await start_container_server(
                backend_url, tokenizer_dir, plan, report
            )
        except Exception as error:  # noqa: BLE001 - reported as "not measured", with why
            info["error"] = f"{type(error).__name__}: {error}"[:2000]
            report.say(f"container path not measured: {info['error']}")
    per_round: dict[str, list[list[dict[str, Any]]]] = {"backend_http": [], "container": []}
    try:
        for number in range(1, plan.rounds + 1):
            results = await run_http_load_process(backend_url, "openai", prompt_file, plan)
            per_round["backend_http"].append(results)
            for result in results:
                report.say(
                    f"round {number} backend    streams={result['concurrency']:3d} {_brief(result)}"
                )
            if url is not None:
                results = await run_http_load_process(url, "container", prompt_file, plan)
                per_round["container"].append(results)
                for result in results:
                    report.say(
                        f"round {number} container  streams={result['concurrency']:3d} "
                        f"{_brief(result)}"
                    )
    finally:
        if process is not None:
            await stop_process(process)
        if log_path is not None:
            log_path.unlink(missing_ok=True)
    rows = {name: median_rows(rounds) for name, rounds in per_round.items() if rounds}
    info["per_round"] = per_round
    if per_round["container"]:
        pairs = list(zip(per_round["backend_http"], per_round["container"], strict=True))
        info["server_overhead_pct_by_round"] = {
            str(concurrency): [
                lost_pct(_at(http, concurrency), _at(ours, concurrency)) for http, ours in pairs
            ]
            for concurrency in plan.concurrencies
        }
    return rows, info


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency, the median over rounds of every numeric figure of the rows.

    Parameters
    ----------
    rounds
        One list of rows (one row per concurrency) per round.

    Returns
    -------
    list of dict
        Rows shaped like one round's, with ``tokens_per_s_min`` / ``_max`` added.
    """
    merged: list[dict[str, Any]] = []
    for index, first in enumerate(rounds[0]):
        same = [series[index] for series in rounds]
        row: dict[str, Any] = {}
        for key, value in first.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and key != "concurrency":
                row[key] = round(statistics.median(float(r[key]) for r in same), 3)
            else:
                row[key] = value
        rates = [float(r["tokens_per_s"]) for r in same]
        row["tokens_per_s_min"], row["tokens_per_s_max"] = min(rates), max(rates)
        merged.append(row)
    return merged


def lost_pct(base: dict[str, Any] | None, over: dict[str, Any] | None) -> float | None:
    """Throughput lost from ``base`` to ``over`` in percent (``None`` when either is missing).

    Parameters
    ----------
    base, over
        Rows with ``tokens_per_s``.

    Returns
    -------
    float or None
        ``100 * (1 - over / base)``, rounded to 0.01.
    """
    if not base or not over:
        return None
    return round(100.0 * (1.0 - float(over["tokens_per_s"]) / float(base["tokens_per_s"])), 2)


def _brief(result: dict[str, Any]) -> str:
    return (
        f"{result['tokens_per_s']:9.1f} tok/s  TTFT p50 {result['ttft_ms_p50']:8.1f} ms  "
        f"ITL p50 {result['itl_ms_p50']:7.2f} ms"
    )


def _at(rows: list[dict[str, Any]] | None, concurrency: int) -> dict[str, Any] | None:
    for row in rows or []:
        if row["concurrency"] == concurrency:
            return row
    return None


def derive_figures(
    rows: dict[str, list[dict[str, Any]]], roofline_tokens_per_s: float, top: int
) -> dict[str, Any]:
    """Compute speed-up, server overhead and batch-1 roofline fraction from the rows.

    Parameters
    ----------
    rows
        Results per configuration (``seed``, ``direct``, ``backend_http``, ``container``).
    roofline_tokens_per_s
        Ideal batch-1 decode rate: bandwidth / weight bytes.
    top
        The largest concurrency measured (64 in the full run).

    Returns
    -------
    dict
        ``speedup_vs_seed_at_64``, ``server_overhead_pct`` (throughput lost by putting our
        container server in front of the backend's own HTTP endpoint, at ``top`` streams),
        ``overhead_vs_direct_pct`` (the same against in-process calls), per-stream ITL added by
        the server, and ``batch1_decode_tokens_per_s`` / ``batch1_fraction_of_roofline`` per
        configuration.
    """
    figures: dict[str, Any] = {"top_concurrency": top}
    seed_top, direct_top = _at(rows.get("seed"), top), _at(rows.get("direct"), top)
    http_top, container_top = _at(rows.get("backend_http"), top), _at(rows.get("container"), top)
    figures["speedup_vs_seed_at_64"] = (
        round(direct_top["tokens_per_s"] / seed_top["tokens_per_s"], 2)
        if seed_top and direct_top
        else None
    )
    figures["speedup_vs_seed_at_64_via_container"] = (
        round(container_top["tokens_per_s"] / seed_top["tokens_per_s"], 2)
        if seed_top and container_top
        else None
    )

    figures["server_overhead_pct"] = lost_pct(http_top, container_top)
    figures["overhead_vs_direct_pct"] = lost_pct(direct_top, container_top)
    figures["backend_http_overhead_vs_direct_pct"] = lost_pct(direct_top, http_top)
    figures["server_overhead_pct_by_streams"] = {
        str(row["concurrency"]): lost_pct(_at(rows.get("backend_http"), row["concurrency"]), row)
        for row in rows.get("container", [])
    }
    if http_top and container_top:
        figures["server_added_itl_ms_p50"] = round(
            container_top["itl_ms_p50"] - http_top["itl_ms_p50"], 3
        )
        figures["server_added_ttft_ms_p50"] = round(
            container_top["ttft_ms_p50"] - http_top["ttft_ms_p50"], 2
        )
    # One stream: the median gap between chunks is the decode step (robust to the seed
    # streamer's one-word hold-back and to the flush at the end).
    batch1 = {
        name: round(1e3 / row["itl_ms_p50"], 2)
        for name, series in rows.items()
        if (row := _at(series, 1)) is not None and row["itl_ms_p50"] > 0
    }
    figures["batch1_decode_tokens_per_s"] = batch1
    figures["batch1_fraction_of_roofline"] = {
        name: round(rate / roofline_tokens_per_s, 3) for name, rate in batch1.items()
    }
    best = max(batch1.items(), key=lambda item: item[1], default=None)
    figures["batch1_best"] = (
        {"config": best[0], "fraction_of_roofline": round(best[1] / roofline_tokens_per_s, 3)}
        if best
        else None
    )
    return figures


def format_table(rows: dict[str, list[dict[str, Any]]]) -> str:
    """Render the rows as a fixed-width table."""
    header = (
        f"{'configuration':<14} {'streams':>7} {'tokens/s':>10} {'TTFT p50':>9} {'TTFT p99':>9} "
        f"{'ITL p50':>8} {'ITL p99':>8} {'stream tok/s':>12}"
    )
    lines = [header, "-" * len(header)]
    order = [name for name in ("seed", "direct", "backend_http", "container") if name in rows]
    for name in order:
        for row in rows[name]:
            lines.append(
                f"{name:<14} {row['concurrency']:>7d} {row['tokens_per_s']:>10.1f} "
                f"{row['ttft_ms_p50']:>9.1f} {row['ttft_ms_p99']:>9.1f} {row['itl_ms_p50']:>8.2f} "
                f"{row['itl_ms_p99']:>8.2f} {row['stream_decode_tokens_per_s']:>12.1f}"
            )
    lines.append("(TTFT and ITL in ms; ITL = gap between streamed chunks)")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    """Versions of what the figures depend on."""
    import transformers

    found = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    if torch.cuda.is_available():
        found["cuda"] = str(torch.version.cuda)
    return found


def run(plan: RunPlan, report: Report) -> dict[str, Any]:
    """Run the whole benchmark for ``plan`` and return the result document."""
    torch.manual_seed(0)
    device_name = torch.cuda.get_device_name(0) if plan.device == "cuda" else platform.processor()
    report.say(f"device: {device_name or 'cpu'}; versions {versions()}")
    bandwidth = measure_copy_bandwidth(plan.device, plan.copy_bytes)
    report.say(f"copy bandwidth (read + write): {bandwidth / 1e9:.1f} GB/s")

    tick = time.perf_counter()
    model = build_random_model(plan.shape, plan.device, plan.dtype)
    if plan.device == "cuda":
        torch.cuda.synchronize()
    build_s = time.perf_counter() - tick
    weight_bytes = weight_bytes_per_decode_step(model)
    roofline = bandwidth / weight_bytes
    params = sum(p.numel() for p in model.parameters())
    report.say(
        f"model: {params / 1e9:.2f} B parameters built in {build_s:.1f} s; decode step reads "
        f"{weight_bytes / 1e9:.2f} GB of weights -> roofline {roofline:.1f} tokens/s at batch 1"
    )
    with tempfile.TemporaryDirectory(prefix="bench-gpu-serving-") as scratch:
        tokenizer_dir = Path(scratch)
        tokenizer = build_word_tokenizer(plan.shape["vocab_size"], tokenizer_dir)
        prompt = fixed_prompt(plan.prompt_tokens, plan.shape["vocab_size"])
        measured = _run_async(
            measure_in_process(plan, model, tokenizer, tokenizer_dir, prompt, report)
        )
    rows = measured.pop("rows")
    document: dict[str, Any] = {
        "benchmark": "gpu_serving",
        "device": device_name or "cpu",
        "model_shape": plan.shape,
        "parameters": params,
        "dtype": str(plan.dtype).removeprefix("torch."),
        "prompt_tokens": plan.prompt_tokens,
        "max_new_tokens": plan.max_new_tokens,
        "concurrencies": list(plan.concurrencies),
        "copy_bandwidth_gb_s": round(bandwidth / 1e9, 1),
        "copy_bandwidth_bytes_per_s": int(bandwidth),
        "weight_bytes_per_step": weight_bytes,
        "roofline_batch1_tokens_per_s": round(roofline, 2),
        "model_build_s": round(build_s, 1),
        **derive_figures(rows, roofline, max(plan.concurrencies)),
        **overhead_median(measured.get("interleaved", {}), max(plan.concurrencies)),
        **measured,
        "rows": rows,
        "versions": versions(),
    }
    return document


def overhead_median(interleaved: dict[str, Any], top: int) -> dict[str, Any]:
    """The server overhead at ``top`` streams judged on the median of the interleaved rounds.

    Parameters
    ----------
    interleaved
        What :func:`measure_interleaved` returned beside the rows.
    top
        The largest concurrency.

    Returns
    -------
    dict
        ``server_overhead_pct_median`` and ``server_overhead_pct_spread`` ([min, max] over the
        rounds), or nothing when the container path was not measured.
    """
    by_round = interleaved.get("server_overhead_pct_by_round", {}).get(str(top))
    values = [v for v in by_round or [] if v is not None]
    if not values:
        return {}
    return {
        "server_overhead_pct_median": round(statistics.median(values), 2),
        "server_overhead_pct_spread": [min(values), max(values)],
    }


def _run_async(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and, last, one JSON line.

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
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--min-requests", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved backend_http / container rounds"
    )
    add_gate_argument(parser)
    parser.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="on")
    parser.add_argument("--async-batching", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--kv-memory-fraction", type=float, default=0.6)
    parser.add_argument(
        "--kv-padding", type=int, default=1024, help="KV padding interval (0: transformers preset)"
    )
    parser.add_argument("--no-container", action="store_true", help="skip the container row")
    parser.add_argument(
        "--no-seed", action="store_true", help="skip the seed-style rows (~5 min on the GPU)"
    )
    parser.add_argument(
        "--variant-set",
        choices=["serving", "batch1"],
        default="serving",
        help="which other continuous-batching settings --variants times",
    )
    parser.add_argument("--q-padding", type=int, default=8, help="query padding (batch1 set)")
    parser.add_argument(
        "--variants",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time other continuous-batching settings, in-process, at 1 and the top streams",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    plan = plan_from_args(args)
    report = Report()
    document = run(plan, report)
    table = format_table(document["rows"])
    print(table)
    # A smoke run's figures (tiny model, CPU) say nothing about the target.
    missed = judge(document, () if args.smoke else TARGETS)
    line = json.dumps(document, separators=(",", ":"), default=_json_default)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_serving.json").write_text(line + "\n", encoding="utf-8")
        Path(out, "gpu_serving.log").write_text(
            "\n".join([*report.lines, table, line]) + "\n", encoding="utf-8"
        )
    print(line, flush=True)
    return 1 if missed and args.gate else 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
