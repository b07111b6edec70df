"""make diff: CDK's own diff of two synthesized trees, offline, without credentials."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from preflight.diff import diff_assemblies, synth, worktree

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def head_tree() -> Iterator[Path]:
    with worktree("HEAD", ROOT) as tree:
        yield tree


@pytest.fixture(scope="module")
def base_assembly(head_tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(head_tree, "prod", tmp_path_factory.mktemp("base") / "out")


def test_an_unchanged_tree_shows_no_differences(
    base_assembly: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with worktree("HEAD", ROOT) as tree:
        new = synth(tree, "prod", tmp_path_factory.mktemp("same") / "out")
    diffs = diff_assemblies(base_assembly, new, cwd=ROOT)
    assert {d.stack for d in diffs} == {
        "chatbot-prod/Stateful",
        "chatbot-prod/Network",
        "chatbot-prod/Inference",
        "chatbot-prod/FrontDoor",
        "chatbot-prod/Monitoring",
        "chatbot-prod/Customization",
    }
    assert [d.stack for d in diffs if d.changed] == []
    assert all("There were no differences" in d.text for d in diffs)


def test_a_changed_instance_type_replaces_the_chat_endpoint_config(
    base_assembly: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with worktree("HEAD", ROOT) as tree:
        cdk_json = tree / "cdk.json"
        data = json.loads(cdk_json.read_text())
        data["context"]["chatbot:environments"]["prod"]["chat"]["instance_type"] = "ml.g5.24xlarge"
        cdk_json.write_text(json.dumps(data, indent=2))
        new = synth(tree, "prod", tmp_path_factory.mktemp("changed") / "out")
    diffs = {d.stack: d for d in diff_assemblies(base_assembly, new, cwd=ROOT)}
    changed = {name for name, d in diffs.items() if d.changed}
    assert changed == {"chatbot-prod/Inference"}
    text = diffs["chatbot-prod/Inference"].text
    replaced = [
        line
        for line in text.splitlines()
        if "AWS::SageMaker::EndpointConfig" in line and "replace" in line
    ]
    assert replaced, text
    assert "ml.g5.24xlarge" in text
