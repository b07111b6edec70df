"""What every benchmark shares: ports, child servers, readiness, percentiles and target gates.

No library fits the gate: pytest-benchmark and asv compare a run with stored runs, not with
fixed targets.
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago.

    Parameters
    ----------
    host
        Interface to probe.

    Returns
    -------
    int
        The port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def child_env(**extra: str) -> dict[str, str]:
    """Environment for a child process: offline hubs, dummy AWS credentials, quiet logs.

    Parameters
    ----------
    **extra
        Variables to set on top.

    Returns
    -------
    dict
        The environment.
    """
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        AWS_ACCESS_KEY_ID=env.get("AWS_ACCESS_KEY_ID", "bench"),
        AWS_SECRET_ACCESS_KEY=env.get("AWS_SECRET_ACCESS_KEY", "bench"),
        AWS_DEFAULT_REGION=env.get("AWS_DEFAULT_REGION", "us-east-1"),
        POWERTOOLS_METRICS_DISABLED="true",
        # As in the local stack: no X-Ray daemon here, and the SDK patched into botocore
        # would only report each call's missing segment.
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_LOG_LEVEL="WARNING",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def wait_ready(
    url: str, child: subprocess.Popen[bytes] | None = None, *, timeout_s: float = 300.0
) -> None:
    """Poll ``url`` until it answers 200; fail early when ``child`` exits.

    Parameters
    ----------
    url
        Health URL.
    child
        The process that serves it, if any.
    timeout_s
        How long to wait.

    Raises
    ------
    RuntimeError
        The child exited or the URL never answered 200 in time.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"{child.args!r} exited with {child.returncode}")
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout_s} s; last answer: {last}")


@contextmanager
def serve(
    argv: Sequence[str],
    ready_url: str,
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 300.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server process for the block, once ``ready_url`` answers 200.

    Parameters
    ----------
    argv
        Command line (``sys.executable`` first for Python modules).
    ready_url
        Health URL to poll.
    log
        File for the child's stdout and stderr (discarded when ``None``).
    env
        Child environment (default: :func:`child_env`).
    timeout_s
        Readiness deadline.

    Yields
    ------
    subprocess.Popen
        The running child; it is terminated (then killed) when the block ends.
    """
    sink = log.open("wb") if log is not None else subprocess.DEVNULL
    child = subprocess.Popen(
        list(argv),
        cwd=REPO,
        env=dict(env) if env is not None else child_env(),
        stdout=sink,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_ready(ready_url, child, timeout_s=timeout_s)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log is not None else ""
            raise RuntimeError(f"{exc}\n{tail}") from exc
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if log is not None and not isinstance(sink, int):
            sink.close()


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process, from ``/proc`` (0 where there is none).

    Parameters
    ----------
    pid
        Process id.

    Returns
    -------
    float
        CPU seconds used so far.
    """
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (``q`` in 0..100) of ``values``; NaN when empty.

    Parameters
    ----------
    values
        Samples.
    q
        Percentile, 0 to 100.

    Returns
    -------
    float
        The interpolated value.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


_COMPARE: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, ">=": operator.ge}


@dataclass(frozen=True)
class Target:
    """A figure of the result JSON and the bound it must keep.

    Parameters
    ----------
    path
        Dotted path into the result (``"by_concurrency.1.ttft_p50"``).
    limit
        The bound.
    compare
        ``"<="`` (at most) or ``">="`` (at least).
    """

    path: str
    limit: float
    compare: Literal["<=", ">="] = "<="

    def value(self, result: Mapping[str, Any]) -> float | None:
        """The figure at :attr:`path`, or ``None`` when the result lacks it."""
        node: Any = result
        for key in self.path.split("."):
            if not isinstance(node, Mapping) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    def met(self, result: Mapping[str, Any]) -> bool:
        """Whether the result keeps the bound (a missing or NaN figure misses it)."""
        value = self.value(result)
        return (
            value is not None
            and not math.isnan(value)
            and _COMPARE[self.compare](value, self.limit)
        )

    def describe(self) -> str:
        """``path <= limit``."""
        return f"{self.path} {self.compare} {self.limit:g}"


def add_gate_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--no-gate``: report missed targets but exit 0 (for exploring).

    Parameters
    ----------
    parser
        The bench's argument parser.
    """
    parser.add_argument(
        "--no-gate",
        dest="gate",
        action="store_false",
        help="exit 0 even when a target is missed (explore; default: a miss exits 1)",
    )


def judge(result: dict[str, Any], targets: Sequence[Target]) -> list[Target]:
    """Record the targets and the missed ones in ``result``; name each miss on stderr.

    Parameters
    ----------
    result
        The bench's figures; ``targets`` and ``missed`` are added.
    targets
        What the bench promises.

    Returns
    -------
    list of Target
        The targets the result misses.
    """
    missed = [t for t in targets if not t.met(result)]
    result["targets"] = {t.path: f"{t.compare} {t.limit:g}" for t in targets}
    result["missed"] = [{"target": t.describe(), "value": t.value(result)} for t in missed]
    for target in missed:
        print(f"MISSED {target.describe()}: measured {target.value(result)}", file=sys.stderr)
    return missed


def gate(result: dict[str, Any], targets: Sequence[Target], *, enforce: bool = True) -> int:
    """Judge ``result``, print its JSON line last, and return the exit status.

    Parameters
    ----------
    result
        The bench's figures; ``targets`` and ``missed`` are added.
    targets
        What the bench promises.
    enforce
        ``False`` (``--no-gate``) reports misses but returns 0.

    Returns
    -------
    int
        1 when a target was missed and ``enforce`` is set, else 0.
    """
    missed = judge(result, targets)
    print(json.dumps(result))
    return 1 if missed and enforce else 0
