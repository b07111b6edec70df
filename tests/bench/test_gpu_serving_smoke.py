"""CPU smoke run of the GPU serving benchmark: every configuration end to end, and its sums."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.serving_load import RequestTiming, percentile, summarize

REPO_ROOT = Path(__file__).resolve().parents[2]
SMOKE_TOKENS = 4


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """Run ``python -m bench.gpu_serving --smoke`` once (tiny model, real servers, real HTTP)."""
    out = tmp_path_factory.mktemp("out")
    env = dict(os.environ)
    env.update(
        OUT=str(out),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    completed = subprocess.run(
        [sys.executable, "-m", "bench.gpu_serving", "--smoke", "--no-variants"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    last_line = completed.stdout.strip().splitlines()[-1]
    document = json.loads(last_line)
    assert json.loads((out / "gpu_serving.json").read_text()) == document
    assert "configuration" in (out / "gpu_serving.log").read_text()
    return document, completed.stdout


@pytest.mark.timeout(180)
def test_smoke_run_measures_every_configuration(smoke_run: tuple[dict[str, Any], str]) -> None:
    document, stdout = smoke_run
    rows = document["rows"]
    assert set(rows) == {"seed", "direct", "backend_http", "container"}, document.get(
        "container_not_measured"
    )
    for name, series in rows.items():
        assert [row["concurrency"] for row in series] == [1, 4], name
        for row in series:
            # Fixed output length: every request produced exactly the tokens asked for.
            assert row["tokens"] == row["requests"] * SMOKE_TOKENS, (name, row)
            assert row["tokens_per_s"] > 0
            assert 0 < row["ttft_ms_p50"] <= row["ttft_ms_p99"]
    assert rows["seed"][1]["requests"] == 4
    # backend_http and container interleaved for two rounds (the smoke cap); rows are medians.
    interleaved = document["interleaved"]
    assert interleaved["rounds"] == 2
    assert [len(interleaved["per_round"][name]) for name in ("backend_http", "container")] == [2, 2]
    for name in ("backend_http", "container"):
        for row in rows[name]:
            assert row["tokens_per_s_min"] <= row["tokens_per_s"] <= row["tokens_per_s_max"]
    spread = document["server_overhead_pct_spread"]
    assert spread[0] <= document["server_overhead_pct_median"] <= spread[1]
    assert document["targets"] == {}  # a smoke run gates nothing
    # The table is printed before the JSON line, one line per row.
    assert stdout.count("\ncontainer ") == 2
    assert stdout.strip().splitlines()[-1].startswith("{")


@pytest.mark.timeout(180)
def test_smoke_run_reports_headline_figures(smoke_run: tuple[dict[str, Any], str]) -> None:
    document, _ = smoke_run
    assert document["device"]
    assert document["copy_bandwidth_bytes_per_s"] > 0
    assert document["weight_bytes_per_step"] > 0
    roofline = document["copy_bandwidth_bytes_per_s"] / document["weight_bytes_per_step"]
    assert document["roofline_batch1_tokens_per_s"] == pytest.approx(roofline, rel=0.01)
    assert document["speedup_vs_seed_at_64"] > 0
    assert isinstance(document["server_overhead_pct"], float)
    assert set(document["batch1_fraction_of_roofline"]) == set(document["rows"])
    assert document["cb_config"]["use_cuda_graph"] == [False, False]  # no CUDA on the CPU


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))


def test_summarize_measures_ttft_gaps_and_aggregate_rate() -> None:
    timings = [
        RequestTiming(started=0.0, chunk_times=[0.1, 0.2, 0.3], tokens=3, finished=0.3),
        RequestTiming(started=0.0, chunk_times=[0.2, 0.4, 0.6], tokens=3, finished=0.6),
    ]
    result = summarize(timings, concurrency=2)
    assert result["tokens"] == 6
    assert result["tokens_per_s"] == pytest.approx(10.0)
    assert result["ttft_ms_p50"] == pytest.approx(150.0)
    assert result["itl_ms_p50"] == pytest.approx(150.0)
    assert result["stream_decode_tokens_per_s"] == pytest.approx(7.5)


def _row(
    concurrency: int, tokens_per_s: float, itl_ms: float, ttft_ms: float = 10.0
) -> dict[str, Any]:
    return {
        "concurrency": concurrency,
        "requests": concurrency,
        "tokens": 64 * concurrency,
        "wall_s": 1.0,
        "tokens_per_s": tokens_per_s,
        "ttft_ms_p50": ttft_ms,
        "ttft_ms_p99": ttft_ms,
        "itl_ms_p50": itl_ms,
        "itl_ms_p99": itl_ms,
        "stream_decode_tokens_per_s": 1e3 / itl_ms,
    }


def test_derive_figures_speedup_overhead_and_roofline() -> None:
    from bench.gpu_serving import derive_figures, format_table  # imports torch: not at collection

    rows = {
        "seed": [_row(1, 20.0, 50.0), _row(64, 20.0, 50.0)],
        "direct": [_row(1, 50.0, 20.0), _row(64, 1000.0, 60.0)],
        "backend_http": [_row(1, 50.0, 20.0), _row(64, 990.0, 61.0)],
        "container": [_row(1, 49.0, 20.0), _row(64, 970.2, 62.0, ttft_ms=15.0)],
    }
    figures = derive_figures(rows, roofline_tokens_per_s=100.0, top=64)
    assert figures["speedup_vs_seed_at_64"] == pytest.approx(50.0)
    assert figures["server_overhead_pct"] == pytest.approx(2.0)
    assert figures["overhead_vs_direct_pct"] == pytest.approx(2.98)
    assert figures["server_added_itl_ms_p50"] == pytest.approx(1.0)
    assert figures["server_added_ttft_ms_p50"] == pytest.approx(5.0)
    assert figures["batch1_fraction_of_roofline"]["direct"] == pytest.approx(0.5)
    assert figures["batch1_best"]["config"] in {"direct", "backend_http", "container"}
    table = format_table(rows)
    assert table.splitlines()[2].startswith("seed")
    assert len(table.splitlines()) == 2 + 8 + 1


def test_derive_figures_without_container_row_reports_none() -> None:
    from bench.gpu_serving import derive_figures

    rows = {"seed": [_row(64, 20.0, 50.0)], "direct": [_row(64, 1000.0, 60.0)]}
    figures = derive_figures(rows, roofline_tokens_per_s=100.0, top=64)
    assert figures["server_overhead_pct"] is None
    assert figures["speedup_vs_seed_at_64"] == pytest.approx(50.0)
