"""Stage a model snapshot into s3://<assets bucket>/models/<name>/ with resumable multipart uploads.

boto3's managed transfer (``upload_file``) restarts an interrupted multipart upload from zero
and cannot tell which objects are already in place; weights run to tens of GB, so this script
resumes at part granularity: it finds the pending multipart upload of a key, keeps the parts
whose SHA-256 (or MD5 ETag) match the local bytes, uploads the rest and completes the upload.
Objects already staged with the same size and SHA-256 (stored as object metadata) are skipped.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from tqdm import tqdm

__all__ = ["StageReport", "main", "resolve_source", "stage_directory"]

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 64 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
SHA256_METADATA_KEY = "sha256"


@dataclass
class StageReport:
    """What one run did, for the operator and for tests."""

    uploaded_objects: list[str] = field(default_factory=list)
    skipped_objects: list[str] = field(default_factory=list)
    uploaded_parts: int = 0
    reused_parts: int = 0


def resolve_source(source: str, *, cache_dir: Path | None = None) -> Path:
    """Return a local directory for ``source``: itself, or a Hugging Face snapshot of it.

    Parameters
    ----------
    source:
        A local directory, or a Hugging Face repo id such as ``org/model`` (needs network).
    cache_dir:
        Where a downloaded snapshot goes; default the Hugging Face cache.

    Returns
    -------
    Path
        The directory to stage.
    """
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{source} is not a directory")
    from huggingface_hub import snapshot_download  # only for hub sources

    return Path(snapshot_download(repo_id=source, cache_dir=cache_dir))


def _files(directory: Path) -> list[Path]:
    return sorted(
        (p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts),
        key=lambda p: p.relative_to(directory).as_posix(),
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def _parts(path: Path, part_size: int) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        number = 1
        while chunk := handle.read(part_size):
            yield number, chunk
            number += 1


def _already_staged(client: Any, bucket: str, key: str, size: int, sha256: str) -> bool:
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except client.exceptions.ClientError as error:
        if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
            return False
        raise
    same_size = head["ContentLength"] == size
    return bool(same_size and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == sha256)


def _pending_upload(client: Any, bucket: str, key: str) -> str | None:
    uploads = client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", [])
    matching = sorted((u for u in uploads if u["Key"] == key), key=lambda u: u["Initiated"])
    return matching[-1]["UploadId"] if matching else None


def _existing_parts(client: Any, bucket: str, key: str, upload_id: str) -> dict[int, Any]:
    parts: dict[int, Any] = {}
    paginator = client.get_paginator("list_parts")
    for page in paginator.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
        for part in page.get("Parts", []):
            parts[part["PartNumber"]] = part
    return parts


def _part_matches(remote: Any, chunk: bytes, sha256_b64: str) -> bool:
    if remote["Size"] != len(chunk):
        return False
    if remote.get("ChecksumSHA256"):
        return bool(remote["ChecksumSHA256"] == sha256_b64)
    # Without a checksum the ETag is the part's MD5 (SSE-S3); under SSE-KMS it is not, and
    # the part is uploaded again rather than trusted.
    md5 = hashlib.md5(chunk, usedforsecurity=False).hexdigest()
    return bool(remote["ETag"].strip('"') == md5)


def _upload_multipart(
    client: Any,
    bucket: str,
    key: str,
    path: Path,
    sha256: str,
    part_size: int,
    progress: tqdm[Any],
    report: StageReport,
) -> None:
    upload_id = _pending_upload(client, bucket, key)
    existing: dict[int, Any] = {}
    if upload_id is not None:
        existing = _existing_parts(client, bucket, key, upload_id)
    else:
        upload_id = client.create_multipart_upload(
            Bucket=bucket,
            Key=key,
            ChecksumAlgorithm="SHA256",
            Metadata={SHA256_METADATA_KEY: sha256},
        )["UploadId"]
    completed = []
    for number, chunk in _parts(path, part_size):
        checksum = base64.b64encode(hashlib.sha256(chunk).digest()).decode()
        remote = existing.get(number)
        if remote is not None and _part_matches(remote, chunk, checksum):
            etag = remote["ETag"]
            report.reused_parts += 1
        else:
            etag = client.upload_part(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=chunk,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )["ETag"]
            report.uploaded_parts += 1
        completed.append({"PartNumber": number, "ETag": etag, "ChecksumSHA256": checksum})
        progress.update(len(chunk))
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": completed}
    )


def stage_directory(
    directory: Path,
    *,
    bucket: str,
    name: str,
    client: Any,
    part_size: int = DEFAULT_PART_SIZE,
    show_progress: bool = True,
) -> StageReport:
    """Copy every file of ``directory`` to ``s3://bucket/models/<name>/``, resuming where it can.

    Parameters
    ----------
    directory:
        The model snapshot (config, tokenizer, weights).
    bucket:
        The model-assets bucket (``chatbot-<env>-assets-<account>-<region>``).
    name:
        The model's folder, the environment's ``weights_name``.
    client:
        A boto3 S3 client.
    part_size:
        Multipart part size in bytes (at least 5 MiB); files up to this size go in one PUT.
    show_progress:
        Draw a tqdm progress bar over all bytes.

    Returns
    -------
    StageReport
        Objects uploaded or skipped, parts uploaded or reused.
    """
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3 minimum)")
    files = _files(directory)
    if not files:
        raise FileNotFoundError(f"{directory} holds no files")
    report = StageReport()
    total = sum(p.stat().st_size for p in files)
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not show_progress
    ) as progress:
        for path in files:
            key = f"models/{name}/{path.relative_to(directory).as_posix()}"
            size = path.stat().st_size
            sha256 = _sha256_file(path)
            progress.set_postfix_str(path.name)
            if _already_staged(client, bucket, key, size, sha256):
                report.skipped_objects.append(key)
                progress.update(size)
                continue
            if size <= part_size:
                client.put_object(
                    Bucket=bucket,
                    Key=key,
                    Body=path.read_bytes(),
                    Metadata={SHA256_METADATA_KEY: sha256},
                )
                progress.update(size)
            else:
                _upload_multipart(client, bucket, key, path, sha256, part_size, progress, report)
            report.uploaded_objects.append(key)
    return report


def main(argv: list[str] | None = None) -> int:
    """Command line: ``stage_model.py SOURCE --bucket B --name N [--endpoint-url URL]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", help="local snapshot directory, or a Hugging Face repo id")
    parser.add_argument("--bucket", required=True, help="model-assets bucket name")
    parser.add_argument("--name", required=True, help="folder under models/ (weights_name)")
    parser.add_argument("--part-size-mib", type=int, default=DEFAULT_PART_SIZE // MIB)
    parser.add_argument("--endpoint-url", help="S3-compatible endpoint (local testing)")
    parser.add_argument("--region", help="AWS region of the bucket")
    args = parser.parse_args(argv)
    client = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    report = stage_directory(
        resolve_source(args.source),
        bucket=args.bucket,
        name=args.name,
        client=client,
        part_size=args.part_size_mib * MIB,
    )
    print(
        f"staged s3://{args.bucket}/models/{args.name}/: "
        f"{len(report.uploaded_objects)} uploaded, {len(report.skipped_objects)} already there, "
        f"{report.uploaded_parts} parts uploaded, {report.reused_parts} parts resumed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
