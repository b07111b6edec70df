"""Shared infra fixtures: every environment synthesized once per session, masked templates."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before aws_cdk is imported: jsii checks it when its runtime starts.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
# The CLI's context must not leak into tests run from a `cdk` shell.
os.environ.pop("CDK_CONTEXT_JSON", None)
os.environ.pop("CDK_OUTDIR", None)

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVIRONMENTS = ("dev", "staging", "prod")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Synthesized:
    """One synth of all environments: templates by environment and stack id, plus the report."""

    outdir: Path
    templates: dict[str, dict[str, dict[str, Any]]]
    template_files: dict[str, dict[str, Path]]
    validation_report: dict[str, Any]


def stack_template_files(outdir: Path, env: str) -> dict[str, Path]:
    """``stack id -> template file`` of environment ``env``'s stage in the assembly ``outdir``."""
    assembly = outdir / f"assembly-chatbot-{env}"
    manifest = json.loads((assembly / "manifest.json").read_text())
    return {
        artifact["displayName"].split("/")[-1]: assembly / artifact["properties"]["templateFile"]
        for artifact in manifest["artifacts"].values()
        if artifact["type"] == "aws:cloudformation:stack"
    }


def synthesize_all(outdir: Path) -> Synthesized:
    """Synthesize dev, staging and prod in one app (one jsii synth) into ``outdir``."""
    from stacks.app import build_app
    from stacks.stage import SourcePaths

    sources = SourcePaths.from_repository(REPO_ROOT)
    build_app(env_names=ENVIRONMENTS, outdir=str(outdir), sources=sources).synth()
    files = {env: stack_template_files(outdir, env) for env in ENVIRONMENTS}
    templates = {
        env: {stack_id: json.loads(path.read_text()) for stack_id, path in paths.items()}
        for env, paths in files.items()
    }
    report_path = outdir / "validation-report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return Synthesized(outdir, templates, files, report)


def mask_hashes(value: Any) -> Any:
    """Replace every 64-hex asset hash (S3 keys, image tags, asset paths) with a placeholder."""
    if isinstance(value, str):
        return _HASH.sub("<ASSET-HASH>", value)
    if isinstance(value, list):
        return [mask_hashes(item) for item in value]
    if isinstance(value, dict):
        return {mask_hashes(key): mask_hashes(item) for key, item in value.items()}
    return value


def resolve_join(value: Any) -> str:
    """Flatten an ``Fn::Join`` of literals and pseudo-parameters into one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(resolve_join(part) for part in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"<{value['Ref']}>"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    return "<token>"  # Fn::Sub and the like: only literals matter to these tests


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """All environments, synthesized once for the whole session."""
    base = tmp_path_factory.mktemp("synth-a")
    return synthesize_all(base / "cdk.out")


@pytest.fixture(scope="session")
def cdk_json_context() -> dict[str, Any]:
    """The ``context`` of the repository's cdk.json."""
    context: dict[str, Any] = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    return context
