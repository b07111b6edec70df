"""Synth time of each environment against the floor of a one-bucket CDK app, in fresh processes.

Run by hand: ``python bench/synth.py [--runs N]``. Each synth runs in a new interpreter, the way
``cdk synth`` starts the app, so Python start-up, imports and the jsii runtime are counted.
Prints a table, then a JSON line ``{"floor_s": ..., "envs": {...}, "max_ratio": ...}``; the line
also gives ``max_ratio_like_for_like``, against a floor with the same validation setting as ours,
and exits 1 when that ratio misses its target (``--no-gate`` to explore). For reference (not
gated) it also times the floor in a process set up as ``app.py`` sets up ours
(``stacks.synth_process``: node's compile cache, pipelined jsii loads, no teardown), and gives
``max_ratio_same_process`` against that.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import Target, add_gate_argument, gate

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (Target("max_ratio_like_for_like", 2.5),)
ENVIRONMENTS = ("dev", "staging", "prod")

FLOOR_APP = """
{prelude}
from aws_cdk import App, Stack
from aws_cdk import aws_s3 as s3

app = App({builtin_validation})
stack = Stack(app, "Floor")
s3.Bucket(stack, "Bucket")
app.synth()
{epilogue}
"""
SYNTH_PROCESS_PRELUDE = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from stacks import synth_process
synth_process.prepare()
"""
SYNTH_PROCESS_EPILOGUE = "synth_process.exit_now(0)"


def _timed_run(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def _base_env(outdir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
        CDK_OUTDIR=outdir,
    )
    env.pop("CDK_CONTEXT_JSON", None)
    return env


def median_synth_seconds(
    env_name: str | None,
    runs: int,
    *,
    floor_validation: bool = True,
    floor_synth_process: bool = False,
) -> float:
    """Median wall time of ``runs`` synths of ``env_name`` (``None``: the one-bucket floor).

    ``floor_validation=False`` turns off CDK's built-in CloudFormation validation in the floor
    app too, as stacks/app.py does (cfn-lint runs in the tests instead).
    ``floor_synth_process=True`` also sets the floor's process up as app.py does
    (``stacks.synth_process``).
    """
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="bench-synth-") as outdir:
            env = _base_env(outdir)
            if env_name is None:
                script = Path(outdir) / "floor_app.py"
                option = "" if floor_validation else "builtin_cloud_formation_validation=False"
                script.write_text(
                    FLOOR_APP.format(
                        builtin_validation=option,
                        prelude=SYNTH_PROCESS_PRELUDE if floor_synth_process else "",
                        epilogue=SYNTH_PROCESS_EPILOGUE if floor_synth_process else "",
                    )
                )
                argv = [sys.executable, str(script)]
            else:
                # Exactly what `cdk synth -c env=<name>` hands to the app.
                env["CDK_CONTEXT_JSON"] = json.dumps({"env": env_name})
                argv = [sys.executable, str(ROOT / "app.py")]
            times.append(_timed_run(argv, env))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    """Time the floor and every environment, print the table and the JSON line.

    Parameters
    ----------
    argv
        Command-line arguments (default: ``sys.argv``).

    Returns
    -------
    int
        Exit status: 1 when a target was missed (unless ``--no-gate``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    add_gate_argument(parser)
    args = parser.parse_args(argv)
    floor = median_synth_seconds(None, args.runs)
    bare_floor = median_synth_seconds(None, args.runs, floor_validation=False)
    process_floor = median_synth_seconds(
        None, args.runs, floor_validation=False, floor_synth_process=True
    )
    envs = {name: median_synth_seconds(name, args.runs) for name in ENVIRONMENTS}
    print(f"{'app':<34}{'median s':>10}{'x floor':>10}")
    print(f"{'one bucket (the floor, CDK defaults)':<34}{floor:>10.2f}{1.0:>10.2f}")
    label = "one bucket, no built-in validation"
    print(f"{label:<34}{bare_floor:>10.2f}{bare_floor / floor:>10.2f}")
    label = "  same, app.py's synth process"
    print(f"{label:<34}{process_floor:>10.2f}{process_floor / floor:>10.2f}")
    for name, seconds in envs.items():
        print(f"{name:<34}{seconds:>10.2f}{seconds / floor:>10.2f}")
    result: dict[str, object] = {
        "floor_s": round(floor, 3),
        "floor_without_builtin_validation_s": round(bare_floor, 3),
        "floor_with_synth_process_s": round(process_floor, 3),
        "envs": {name: round(seconds, 3) for name, seconds in envs.items()},
        "max_ratio": round(max(envs.values()) / floor, 3),
        # Our app turns CDK's built-in template validation off (cfn-lint runs in the tests
        # instead); against a floor that does the same, the ratio is the cost of our own code.
        "max_ratio_like_for_like": round(max(envs.values()) / bare_floor, 3),
        # For reference, not gated: the floor in a process set up as app.py sets up ours.
        "max_ratio_same_process": round(max(envs.values()) / process_floor, 3),
    }
    return gate(result, TARGETS, enforce=args.gate)


if __name__ == "__main__":
    sys.exit(main())
