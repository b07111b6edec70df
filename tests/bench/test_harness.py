"""The bench harness: percentiles, target gates and the child servers every bench starts."""

from __future__ import annotations

import json
import math
import sys

import pytest

from bench.harness import Target, free_port, gate, percentile, serve


def test_percentile_interpolates_and_is_nan_for_nothing() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert math.isnan(percentile([], 50))


def test_gate_fails_on_a_missed_target_and_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    targets = (Target("a.b", 10.0), Target("c", 1.0, ">="), Target("absent", 1.0))
    result = {"a": {"b": 12.5}, "c": 3}
    assert gate(result, targets) == 1
    out, err = capsys.readouterr()
    line = json.loads(out.strip().splitlines()[-1])
    assert [m["target"] for m in line["missed"]] == ["a.b <= 10", "absent <= 1"]
    assert line["targets"] == {"a.b": "<= 10", "c": ">= 1", "absent": "<= 1"}
    assert "MISSED a.b <= 10: measured 12.5" in err


def test_gate_passes_when_every_target_holds_and_no_gate_never_fails() -> None:
    assert gate({"x": 1.0}, (Target("x", 1.0),)) == 0
    assert gate({"x": 2.0}, (Target("x", 1.0),), enforce=False) == 0
    assert gate({"x": math.nan}, (Target("x", 1.0),)) == 1


def test_serve_waits_for_readiness_and_stops_the_child(tmp_path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    with serve(argv, f"http://127.0.0.1:{port}/", log=tmp_path / "log") as child:
        assert child.poll() is None
        import httpx

        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    assert child.poll() is not None
