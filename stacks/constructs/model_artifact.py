"""Per-model artifacts directory packaged as a byte-for-byte deterministic tar.gz S3 asset."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import tempfile
from pathlib import Path

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

__all__ = ["ModelArtifact", "deterministic_tar_gz"]

# Never shipped to an endpoint: interpreter caches differ between machines and runs.
_EXCLUDED_NAMES = frozenset({"__pycache__", ".DS_Store", ".pytest_cache"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


def _included_files(source_dir: Path) -> list[Path]:
    files = []
    for path in source_dir.rglob("*"):
        relative = path.relative_to(source_dir)
        if any(part in _EXCLUDED_NAMES for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(_EXCLUDED_SUFFIXES):
            files.append(path)
    return sorted(files, key=lambda file: file.relative_to(source_dir).as_posix())


def deterministic_tar_gz(source_dir: Path) -> bytes:
    """Pack ``source_dir`` into a tar.gz whose bytes depend only on file names and contents.

    Entries are sorted, with mtime 0, uid/gid 0, no owner names, mode 0644 (0755 where the
    owner may execute), and the gzip header carries no file name and mtime 0, so every synth
    on every machine yields identical bytes and so an unchanged asset hash.

    Parameters
    ----------
    source_dir:
        Directory whose files go at the archive root (SageMaker extracts it to /opt/ml/model).

    Returns
    -------
    bytes
        The archive.
    """
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in _included_files(source_dir):
            info = tarfile.TarInfo(path.relative_to(source_dir).as_posix())
            data = path.read_bytes()
            info.size = len(data)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            archive.addfile(info, io.BytesIO(data))
    gz_buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz_buffer, mtime=0, compresslevel=9) as gz:
        gz.write(tar_buffer.getvalue())
    return gz_buffer.getvalue()


class ModelArtifact(Construct):
    """A ``model_artifacts/<role>/`` directory as a deterministic ``model.tar.gz`` S3 asset.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    source_dir:
        The artifacts directory (``serving.properties`` and friends).
    build_dir:
        Where the archive is written, keyed by its content hash, before CDK stages it.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, source_dir: Path, build_dir: Path
    ) -> None:
        super().__init__(scope, construct_id)
        if not (source_dir / "serving.properties").is_file():
            raise FileNotFoundError(f"{source_dir}/serving.properties is missing")
        archive = deterministic_tar_gz(source_dir)
        digest = hashlib.sha256(archive).hexdigest()
        build_dir.mkdir(parents=True, exist_ok=True)
        self.archive_path = build_dir / f"{source_dir.name}-{digest}.tar.gz"
        if not self.archive_path.exists():
            # A unique temporary name, then an atomic rename: concurrent synths may race here.
            with tempfile.NamedTemporaryFile(dir=build_dir, suffix=".partial", delete=False) as f:
                f.write(archive)
            Path(f.name).replace(self.archive_path)
        self.asset = s3_assets.Asset(self, "Archive", path=str(self.archive_path))

    @property
    def s3_url(self) -> str:
        """``s3://bucket/key`` of the uploaded archive (SageMaker's ``ModelDataUrl``)."""
        return self.asset.s3_object_url

    @property
    def object_arn(self) -> str:
        """ARN of exactly this archive object."""
        return f"arn:{Aws.PARTITION}:s3:::{self.asset.s3_bucket_name}/{self.asset.s3_object_key}"

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read this archive object and nothing else in the assets bucket."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:GetObject"], resource_arns=[self.object_arn]
        )
