"""The Dockerfile: pinned vLLM base, SageMaker label, exec-form entrypoint, COPY sources."""

import json
import re
import shlex
from pathlib import Path

from tests.container.helpers import REPO

CONTEXT = REPO / "container"


def _instructions() -> list[tuple[str, str]]:
    text = (CONTEXT / "Dockerfile").read_text().replace("\\\n", " ")
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_base_image_is_a_pinned_vllm_build_arg() -> None:
    instructions = _instructions()
    assert instructions[0][0] == "ARG"
    match = re.fullmatch(r"BASE_IMAGE=vllm/vllm-openai:(v\d+\.\d+\.\d+\S*)", instructions[0][1])
    assert match is not None, instructions[0]
    assert instructions[1] == ("FROM", "${BASE_IMAGE}")


def test_sagemaker_label_and_exec_form_entrypoint() -> None:
    instructions = dict(_instructions()[2:])
    assert "com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true" in instructions["LABEL"]
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    assert entrypoint == ["python3", "-m", "inference_server"]
    assert json.loads(instructions["CMD"]) == ["serve"]


def test_every_copied_file_exists() -> None:
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert copies
    for rest in copies:
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert not source.startswith("--"), "no --from/--chown expected"
            assert (CONTEXT / source).exists(), source


def test_no_secrets_baked_in() -> None:
    text = (CONTEXT / "Dockerfile").read_text()
    for forbidden in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "HF_TOKEN", "aws_session"):
        assert forbidden not in text


def test_entrypoint_module_dispatches_serve() -> None:
    from inference_server.__main__ import main

    assert main(["bogus"]) == 2
    assert Path(CONTEXT / "inference_server" / "__main__.py").is_file()
