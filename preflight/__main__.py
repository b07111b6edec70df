"""``python -m preflight <command>``: account checks, IAM policy, images, engine flags, diff."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stacks.config import EnvironmentConfig

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent


def _load(env: str) -> tuple[dict[str, Any], EnvironmentConfig]:
    # cdk.json read directly: importing stacks.app would load aws_cdk (seconds) for nothing.
    from stacks.config import load_environment

    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context, load_environment(context, env)


def _account(args: argparse.Namespace) -> int:
    import boto3

    from preflight.account import AccountContext, required_bootstrap_version, run_checks
    from preflight.report import exit_code, print_results
    from stacks.config import ConfigError

    try:
        context, config = _load(args.env)
    except ConfigError as error:
        print(f"FAIL  cdk.json: {error}")
        return 1
    ctx = AccountContext(config=config, session=boto3.Session(), endpoint_url=args.endpoint_url)
    qualifier = context.get("@aws-cdk/core:bootstrapQualifier")
    if isinstance(qualifier, str):
        ctx.qualifier = qualifier
    found = required_bootstrap_version(args.assembly) if args.assembly else None
    if found is not None:
        ctx.required_bootstrap_version, manifest = found
        ctx.bootstrap_source = f"requiresBootstrapStackVersion in {manifest}"
    return exit_code(print_results(run_checks(ctx)))


def _policy(_: argparse.Namespace) -> int:
    from preflight.account import read_policy

    print(json.dumps(read_policy(), indent=2))
    return 0


def _images(_: argparse.Namespace) -> int:
    from preflight.images import check_images
    from preflight.report import exit_code, print_results

    return exit_code(print_results(check_images()))


def _engine_args(args: argparse.Namespace) -> int:
    from preflight.engine_args import check_engine_args, prepare_probe_envs
    from preflight.report import exit_code, print_results

    if args.prepare:
        for python in prepare_probe_envs():
            print(f"probe venv ready: {python}")
        return 0
    return exit_code(print_results(check_engine_args(args.env or None)))


def _diff(args: argparse.Namespace) -> int:
    from preflight.diff import main_diff

    return main_diff(args.env, args.base, fail_on_change=args.fail)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run one command; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m preflight", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    account = commands.add_parser("account", help="read-only checks of the target AWS account")
    account.add_argument("--env", required=True)
    account.add_argument("--assembly", type=Path, help="synthesized cloud assembly (cdk.out)")
    account.add_argument("--endpoint-url", help="send every AWS call there (a local emulator)")
    account.set_defaults(run=_account)
    policy = commands.add_parser("policy", help="print the read-only IAM policy the checks need")
    policy.set_defaults(run=_policy)
    images = commands.add_parser("images", help="resolve each image's requirements (pip, dry run)")
    images.set_defaults(run=_images)
    engine = commands.add_parser("engine-args", help="parse the launcher's vLLM argv with vLLM")
    engine.add_argument("--env", action="append", help="environment (repeatable); default all")
    engine.add_argument(
        "--prepare", action="store_true", help="only install the side venvs (make setup does)"
    )
    engine.set_defaults(run=_engine_args)
    diff = commands.add_parser("diff", help="cdk diff of the working tree against a git revision")
    diff.add_argument("--env", required=True)
    diff.add_argument("--base", default="HEAD", help="git revision to compare with")
    diff.add_argument("--fail", action="store_true", help="exit 1 when anything changed")
    diff.set_defaults(run=_diff)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
