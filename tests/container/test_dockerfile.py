"""The Dockerfiles: dev's base image, SageMaker label, exec-form entrypoint, COPY sources."""

import json
import shlex
from pathlib import Path

import pytest

from stacks.base_image import resolve_base_image
from stacks.config import load_environment
from tests.container.helpers import REPO

# Every image is built from the repository root (stacks/constructs/build_context.py).
CONTEXT = REPO
DOCKERFILE = REPO / "container" / "Dockerfile"
IMAGES_ON_THE_DLC = (DOCKERFILE, REPO / "customize" / "Dockerfile")


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    text = dockerfile.read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


@pytest.mark.parametrize("dockerfile", IMAGES_ON_THE_DLC, ids=lambda p: p.parent.name)
def test_base_image_defaults_to_dev_s_dlc(dockerfile: Path) -> None:
    # One base-image version per environment (cdk.json); the Dockerfiles default to dev's, so a
    # hand-built image matches what `cdk deploy` builds for dev.
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    dev = load_environment(context, "dev")
    instructions = _instructions(dockerfile)
    assert instructions[0] == ("ARG", f"BASE_IMAGE={resolve_base_image(dev.base_image, None)}")
    assert instructions[1] == ("FROM", "${BASE_IMAGE}")


def test_sagemaker_label_and_exec_form_entrypoint() -> None:
    instructions = dict(_instructions()[2:])
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in instructions["LABEL"]
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint == ["python3", "-m", "inference_server"]
    assert json.loads(instructions["CMD"]) == ["serve"]


@pytest.mark.parametrize(
    "dockerfile", [*IMAGES_ON_THE_DLC, REPO / "lambda" / "Dockerfile"], ids=lambda p: p.parent.name
)
def test_every_copied_file_exists(dockerfile: Path) -> None:
    copies = [
        rest
        for keyword, rest in _instructions(dockerfile)
        if keyword == "COPY" and not rest.startswith("--from")
    ]
    assert copies
    for rest in copies:
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert not source.startswith("--"), "no --from/--chown expected"
            assert (CONTEXT / source).exists(), source


def test_no_secrets_baked_in() -> None:
    text = DOCKERFILE.read_text()
    for forbidden in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "aws_session"):
        assert forbidden not in text


def test_entrypoint_module_dispatches_serve() -> None:
    from inference_server.__main__ import main

    assert main(["bogus"]) == 2
    assert Path(REPO / "container" / "inference_server" / "__main__.py").is_file()
