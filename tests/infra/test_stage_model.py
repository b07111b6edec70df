"""scripts/stage_model.py against a local S3-compatible server (moto in server mode)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from scripts.stage_model import MIB, main, resolve_source, stage_directory
from tests.servers import moto_server

PART = 5 * MIB


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def s3(s3_endpoint: str, request: pytest.FixtureRequest) -> tuple[Any, str]:
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    bucket = f"chatbot-test-{request.node.name.replace('_', '-')[:40]}".lower()
    client.create_bucket(Bucket=bucket)
    return client, bucket


@pytest.fixture
def snapshot_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "snapshot"
    (directory / "tokenizer").mkdir(parents=True)
    (directory / "config.json").write_text('{"model_type": "gpt_neox"}')
    (directory / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    # Three parts of 5 MiB, 5 MiB and 1 MiB, each with distinct bytes.
    (directory / "model.safetensors").write_bytes(
        b"".join(bytes([n]) * (PART if n < 2 else MIB) for n in range(3))
    )
    return directory


def _read(client: Any, bucket: str, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@pytest.mark.timeout(60)
def test_stages_every_file_under_models_prefix(s3: tuple[Any, str], snapshot_dir: Path) -> None:
    client, bucket = s3
    report = stage_directory(
        snapshot_dir,
        bucket=bucket,
        name="tiny",
        client=client,
        part_size=PART,
        show_progress=False,
    )
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [
        "models/tiny/config.json",
        "models/tiny/model.safetensors",
        "models/tiny/tokenizer/tokenizer.json",
    ]
    weights = (snapshot_dir / "model.safetensors").read_bytes()
    assert _read(client, bucket, "models/tiny/model.safetensors") == weights
    assert _read(client, bucket, "models/tiny/config.json") == b'{"model_type": "gpt_neox"}'
    head = client.head_object(Bucket=bucket, Key="models/tiny/model.safetensors")
    assert head["Metadata"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert report.uploaded_parts == 3
    assert sorted(report.uploaded_objects) == keys


@pytest.mark.timeout(60)
def test_second_run_skips_objects_already_staged(s3: tuple[Any, str], snapshot_dir: Path) -> None:
    client, bucket = s3
    stage_directory(
        snapshot_dir, bucket=bucket, name="m", client=client, part_size=PART, show_progress=False
    )
    (snapshot_dir / "config.json").write_text('{"model_type": "changed"}')
    again = stage_directory(
        snapshot_dir, bucket=bucket, name="m", client=client, part_size=PART, show_progress=False
    )
    assert again.uploaded_objects == ["models/m/config.json"]
    assert len(again.skipped_objects) == 2
    assert again.uploaded_parts == 0
    assert _read(client, bucket, "models/m/config.json") == b'{"model_type": "changed"}'


class _FailAfterParts:
    """Wraps a client so that upload_part fails once ``budget`` parts went through."""

    def __init__(self, client: Any, budget: int) -> None:
        self._client = client
        self._budget = budget

    def upload_part(self, **kwargs: Any) -> Any:
        if self._budget == 0:
            raise ConnectionError("network dropped (injected)")
        self._budget -= 1
        return self._client.upload_part(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.mark.timeout(60)
def test_interrupted_multipart_upload_resumes_from_uploaded_parts(
    s3: tuple[Any, str], snapshot_dir: Path
) -> None:
    client, bucket = s3
    with pytest.raises(ConnectionError):
        stage_directory(
            snapshot_dir,
            bucket=bucket,
            name="r",
            client=_FailAfterParts(client, 1),
            part_size=PART,
            show_progress=False,
        )
    pending = client.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["Key"] for u in pending] == ["models/r/model.safetensors"]
    resumed = stage_directory(
        snapshot_dir, bucket=bucket, name="r", client=client, part_size=PART, show_progress=False
    )
    assert (resumed.reused_parts, resumed.uploaded_parts) == (1, 2)
    weights = (snapshot_dir / "model.safetensors").read_bytes()
    assert _read(client, bucket, "models/r/model.safetensors") == weights
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.mark.timeout(60)
def test_changed_local_part_is_uploaded_again_on_resume(
    s3: tuple[Any, str], snapshot_dir: Path
) -> None:
    client, bucket = s3
    with pytest.raises(ConnectionError):
        stage_directory(
            snapshot_dir,
            bucket=bucket,
            name="c",
            client=_FailAfterParts(client, 1),
            part_size=PART,
            show_progress=False,
        )
    weights = bytearray((snapshot_dir / "model.safetensors").read_bytes())
    weights[10] = 0xFF  # the first part, already uploaded, changed locally
    (snapshot_dir / "model.safetensors").write_bytes(bytes(weights))
    resumed = stage_directory(
        snapshot_dir, bucket=bucket, name="c", client=client, part_size=PART, show_progress=False
    )
    assert (resumed.reused_parts, resumed.uploaded_parts) == (0, 3)
    assert _read(client, bucket, "models/c/model.safetensors") == bytes(weights)


@pytest.mark.timeout(60)
def test_command_line(
    s3: tuple[Any, str], s3_endpoint: str, snapshot_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, bucket = s3
    argv = [
        str(snapshot_dir),
        "--bucket",
        bucket,
        "--name",
        "cli",
        "--part-size-mib",
        "5",
        "--endpoint-url",
        s3_endpoint,
        "--region",
        "us-east-1",
    ]
    assert main(argv) == 0
    assert "3 uploaded, 0 already there, 3 parts uploaded" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 uploaded, 3 already there" in capsys.readouterr().out


def test_source_resolution(tmp_path: Path) -> None:
    assert resolve_source(str(tmp_path)) == tmp_path
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        resolve_source(str(tmp_path / "file"))
    # A repo id goes to the hub, which is offline here.
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    with pytest.raises(Exception, match=r"(?i)offline|cannot find|not found|outgoing"):
        resolve_source("togethercomputer/RedPajama-INCITE-Chat-3B-v1", cache_dir=tmp_path / "hf")
