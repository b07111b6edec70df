"""The CDK app: one validated stage per environment chosen with ``-c env=<name>`` (default dev).

``app.py`` at the repository root runs :func:`main` in a process set up for synth
(:mod:`stacks.synth_process`); tests and tools call :func:`build_app` directly.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from stacks.config import ConfigError, load_environment
from stacks.stage import ChatbotStage, SourcePaths

__all__ = ["DEFAULT_ENVIRONMENT", "build_app", "main", "read_cdk_json_context"]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ENVIRONMENT = "dev"


def read_cdk_json_context(path: Path = ROOT / "cdk.json") -> dict[str, Any]:
    """Return the ``context`` object of ``cdk.json``.

    The CDK CLI passes this context to the app itself; reading it here lets a bare
    ``python app.py`` (and tests, and the benchmark) synthesize with the same settings.
    """
    context: dict[str, Any] = json.loads(path.read_text())["context"]
    return context


def build_app(
    *,
    env_names: Sequence[str] | None = None,
    context: Mapping[str, Any] | None = None,
    outdir: str | None = None,
    sources: SourcePaths | None = None,
) -> App:
    """Build the app: one validated :class:`ChatbotStage` per environment, checked by cdk-nag.

    Parameters
    ----------
    env_names:
        Environments to include; default the context's ``env`` (``-c env=<name>``), else dev.
    context:
        Context defaults (CLI context wins over them); default the ``cdk.json`` context.
    outdir:
        Cloud assembly directory; default ``CDK_OUTDIR`` as set by the CLI, else ``cdk.out``.
    sources:
        Build contexts and artifacts; default this repository's layout.

    Returns
    -------
    App
        The app, not yet synthesized.
    """
    defaults = dict(read_cdk_json_context() if context is None else context)
    merged = {**defaults, **_cli_context()}
    names = list(env_names) if env_names else [str(merged.get("env") or DEFAULT_ENVIRONMENT)]
    configs = [load_environment(merged, name) for name in names]
    app = App(
        context=defaults,
        outdir=outdir or os.environ.get("CDK_OUTDIR") or str(ROOT / "cdk.out"),
        analytics_reporting=False,
        # CDK's built-in CloudFormation schema validation costs 7-20 s per synth here (over 90%
        # of it); cfn-lint, a superset, checks every template of every environment in
        # `make test` and `make cfn-lint`. cdk-nag still runs on every synth.
        builtin_cloud_formation_validation=False,
    )
    paths = sources or SourcePaths.from_repository(ROOT)
    for config in configs:
        ChatbotStage(app, config=config, sources=paths)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def _cli_context() -> dict[str, Any]:
    # The CLI hands `-c key=value` and cdk.json context over in this variable.
    raw = os.environ.get("CDK_CONTEXT_JSON")
    return dict(json.loads(raw)) if raw else {}


def main() -> int:
    """Synthesize the selected environment; a settings error prints its message, exit 1."""
    try:
        app = build_app()
    except ConfigError as error:
        print(f"cdk.json: {error}", file=sys.stderr)
        return 1
    app.synth()
    return 0
