"""Runs inside the side venv: parse ``vllm serve`` argv lists with vLLM's own CLI and engine args.

Reads a JSON object ``{label: argv}`` on stdin, prints one JSON line per label with ``ok`` and
``error``. Standard library and vLLM only: it never imports this repository's code.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from typing import Any


def _use_cpu_platform() -> None:
    # No GPU here: vLLM cannot infer a device and its config defaults fail. `vllm bench` falls
    # back to the CPU platform the same way (vllm/entrypoints/cli/main.py).
    from vllm import platforms

    if platforms.current_platform.is_unspecified():
        from vllm.platforms.cpu import CpuPlatform

        platforms.current_platform = CpuPlatform()


def _parser() -> tuple[Any, dict[str, Any]]:
    import vllm.entrypoints.cli.serve as serve
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm")
    subparsers = parser.add_subparsers(required=True, dest="subparser")
    commands = {}
    for command in serve.cmd_init():
        command.subparser_init(subparsers)
        commands[command.name] = command
    return parser, commands


def check(argv: list[str]) -> str | None:
    """None when vLLM accepts ``argv`` (``vllm serve ...``), else its error message."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    parser, commands = _parser()
    if len(argv) > 2 and not argv[2].startswith("-") and not os.path.isdir(argv[2]):
        # The weights directory exists only in the container; with HF_HUB_OFFLINE vLLM would
        # take a missing path for a hub repo id and reject its form.
        argv = [*argv[:2], tempfile.mkdtemp(prefix="vllm-probe-model-"), *argv[3:]]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv[1:])
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue() else "rejected"
    try:
        commands[args.subparser].validate(args)
        if getattr(args, "model_tag", None) is not None:
            args.model = args.model_tag
        AsyncEngineArgs.from_cli_args(args)
    except (ValueError, TypeError, argparse.ArgumentError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def main() -> int:
    """Check every argv list given on stdin."""
    argvs: dict[str, list[str]] = json.load(sys.stdin)
    import vllm

    _use_cpu_platform()
    for label, argv in argvs.items():
        error = check(argv)
        print(json.dumps({"label": label, "vllm": vllm.__version__, "error": error}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
