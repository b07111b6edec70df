"""check-images' resolver: a set that resolves passes; an injected conflicting pin fails with
pip's conflict report. Needs PyPI (reachable here and in CI); the full run is `make check-images`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from preflight.images import AARCH64_PLATFORMS, dockerfile_frozen_packages, resolve

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(600)


def test_dockerfile_frozen_packages_are_read_from_its_grep() -> None:
    frozen = dockerfile_frozen_packages(ROOT / "container" / "Dockerfile")
    assert {"torch", "transformers", "numpy", "pydantic"} <= set(frozen)


def test_lambda_requirements_resolve_for_arm64() -> None:
    resolution = resolve(
        requirement_files=[ROOT / "lambda" / "requirements.txt"], platforms=AARCH64_PLATFORMS
    )
    assert resolution.ok, resolution.conflict()
    assert resolution.versions["fastapi"] == "0.163.2"


def test_a_conflicting_pin_fails_with_the_conflict(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(
        (ROOT / "lambda" / "requirements.txt").read_text() + "starlette==0.20.0\n"
    )
    resolution = resolve(requirement_files=[requirements], platforms=AARCH64_PLATFORMS)
    assert not resolution.ok
    assert "starlette" in resolution.conflict()
    assert "conflict" in resolution.conflict().lower()


def test_a_pin_the_base_image_freezes_cannot_move(tmp_path: Path) -> None:
    resolution = resolve(["httpx==0.28.1"], constraints={"httpcore": "0.1.0"})
    assert not resolution.ok
    assert "httpcore" in resolution.conflict()
