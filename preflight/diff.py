"""A reviewable infrastructure diff without an account: CDK's own diff of two synthesized trees.

``make diff ENV=<env> BASE=<rev>`` synthesizes ``BASE`` in a temporary ``git worktree`` (with
this tree's ``.venv`` and ``node_modules`` linked in and ``PYTHONPATH`` set to the worktree's
sources, so its code runs) and the working tree, then prints per stack what
``cdk diff --template <base template>`` prints against the new assembly: no credentials, no
network (``--template`` compares two local templates).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["StackDiff", "diff_assemblies", "main_diff", "synth", "worktree"]

ROOT = Path(__file__).resolve().parent.parent
# Linked into a base worktree so that it synthesizes with the same toolchain.
SHARED_TOOLCHAIN = (".venv", "node_modules")
SOURCE_DIRS = (".", "container", "lambda", "contracts")
EMPTY_TEMPLATE: dict[str, dict[str, object]] = {"Resources": {}}


def _offline_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # No credentials reach the CDK CLI: the diff must not depend on (or touch) an account.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        CDK_DISABLE_VERSION_CHECK="1",
        JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION="20",
    )
    env.update(extra or {})
    return env


def _cdk(tree: Path, *args: str) -> list[str]:
    # The tree's own CLI, as `npx cdk` finds it, without npx's ~0.3 s start per call.
    return [str(tree / "node_modules" / ".bin" / "cdk"), *args]


def _run(
    command: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@contextmanager
def worktree(rev: str, root: Path = ROOT) -> Iterator[Path]:
    """Check ``rev`` out into a temporary worktree that shares this tree's toolchain.

    Parameters
    ----------
    rev:
        Any git revision.
    root:
        The repository (its ``.venv`` and ``node_modules`` are linked in).

    Yields
    ------
    Path
        The worktree; removed afterwards.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cdk-diff-"))
    tree = scratch / "tree"
    done = _run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=root)
    if done.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"git worktree add {rev} failed: {done.stderr.strip()}")
    try:
        for name in SHARED_TOOLCHAIN:
            link = tree / name
            if link.is_symlink() and not link.exists():
                link.unlink()  # a committed link that points nowhere here
            if (root / name).exists() and not link.exists():
                link.symlink_to(root / name)
        yield tree
    finally:
        _run(["git", "worktree", "remove", "--force", str(tree)], cwd=root)
        shutil.rmtree(scratch, ignore_errors=True)


def synth(tree: Path, env_name: str, out: Path) -> Path:
    """Synthesize environment ``env_name`` of ``tree`` (its own code) into ``out``.

    Parameters
    ----------
    tree:
        A checkout with ``.venv`` and ``node_modules`` (or links to them).
    env_name:
        The environment.
    out:
        The cloud assembly directory.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    RuntimeError
        With the CLI's output, when synth fails.
    """
    python_path = os.pathsep.join(
        str(tree / d) for d in SOURCE_DIRS if (tree / d).is_dir() or d == "."
    )
    done = _run(
        _cdk(tree, "synth", "-c", f"env={env_name}", "--quiet", "--output", str(out)),
        cwd=tree,
        env=_offline_env({"PYTHONPATH": python_path}),
    )
    if done.returncode != 0:
        raise RuntimeError(f"synth of {tree} failed:\n{done.stdout}{done.stderr}"[-4000:])
    return out


def _stacks(assembly: Path) -> dict[str, Path]:
    """``display name -> template`` for every stack of an assembly (nested stages too)."""
    stacks: dict[str, Path] = {}
    for manifest in sorted(assembly.glob("**/manifest.json")):
        artifacts = json.loads(manifest.read_text()).get("artifacts", {})
        for artifact_id, artifact in artifacts.items():
            if artifact.get("type") == "aws:cloudformation:stack":
                name = artifact.get("displayName", artifact_id)
                template = artifact["properties"]["templateFile"]
                stacks[name] = manifest.parent / template
    return stacks


@dataclass(frozen=True, slots=True)
class StackDiff:
    """CDK's diff of one stack: its text and whether anything changed."""

    stack: str
    changed: bool
    text: str


def diff_assemblies(base: Path, new: Path, *, cwd: Path = ROOT) -> list[StackDiff]:
    """Diff every stack of ``new`` against the same stack of ``base`` with ``cdk diff``.

    Parameters
    ----------
    base, new:
        Synthesized cloud assemblies.
    cwd:
        Whose CDK CLI runs the diffs (a tree with ``node_modules``).

    Returns
    -------
    list[StackDiff]
        One per stack of either assembly; stacks only in ``base`` are reported as removed.
    """
    base_stacks, new_stacks = _stacks(base), _stacks(new)
    results = []
    with tempfile.TemporaryDirectory(prefix="cdk-diff-empty-") as scratch:
        empty = Path(scratch) / "empty.template.json"
        empty.write_text(json.dumps(EMPTY_TEMPLATE))
        for name in new_stacks:
            template = base_stacks.get(name, empty)
            done = _run(
                _cdk(
                    cwd,
                    "diff",
                    "--app",
                    str(new),
                    "--exclusively",
                    "--fail",
                    "--template",
                    str(template),
                    name,
                ),
                cwd=cwd,
                env=_offline_env(),
            )
            text = _readable(done.stdout + done.stderr)
            if done.returncode not in (0, 1):
                raise RuntimeError(f"cdk diff {name} failed:\n{text}")
            if name not in base_stacks:
                text = f"(new stack: not in the base)\n{text}"
            results.append(StackDiff(name, done.returncode == 1, text))
    for name in base_stacks.keys() - new_stacks.keys():
        results.append(StackDiff(name, True, f"Stack {name}\n[-] the whole stack is removed"))
    return results


def _readable(output: str) -> str:
    # Keep CDK's diff; drop the CLI's construct-annotation warnings and notices around it.
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("Stack "):
            return "\n".join(lines[index:]).strip()
    return output.strip()


def main_diff(env_name: str, base_rev: str, *, fail_on_change: bool, root: Path = ROOT) -> int:
    """Synthesize ``base_rev`` and the working tree, print the per-stack diff.

    Parameters
    ----------
    env_name:
        The environment.
    base_rev:
        The git revision to compare against.
    fail_on_change:
        Exit 1 when any stack changed.
    root:
        The working tree.

    Returns
    -------
    int
        The exit code: 0, or 1 on a change with ``fail_on_change``, 2 on an error.
    """
    with tempfile.TemporaryDirectory(prefix="cdk-diff-out-") as scratch:
        try:
            new = synth(root, env_name, Path(scratch) / "new")
            with worktree(base_rev, root) as tree:
                base = synth(tree, env_name, Path(scratch) / "base")
            diffs = diff_assemblies(base, new, cwd=root)
        except RuntimeError as error:
            print(f"FAIL  diff: {error}")
            return 2
    for item in diffs:
        print(item.text)
        print()
    changed = [d.stack for d in diffs if d.changed]
    summary = ", ".join(changed) if changed else "none"
    print(f"{env_name}: working tree vs {base_rev}: stacks with differences: {summary}")
    return 1 if changed and fail_on_change else 0
