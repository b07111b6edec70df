"""A role's model artifacts staged uncompressed beside the weights SageMaker downloads."""

from __future__ import annotations

import hashlib
from pathlib import Path

from aws_cdk import Acknowledgment, Fn, Stack, Validations
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from stacks.constructs import pseudo
from stacks.constructs.model_assets_bucket import ModelAssetsBucket
from stacks.constructs.nag_ids import nag_resource_id

__all__ = ["MODEL_DIR", "SERVING_DIR", "ServingArtifacts", "artifacts_digest"]

# Where SageMaker puts the model data source inside the container.
MODEL_DIR = "/opt/ml/model"
# Folder under the weights prefix holding one sub-folder of artifacts per role and content.
SERVING_DIR = "serving"
# Never shipped to an endpoint: interpreter caches differ between machines and runs.
_EXCLUDED_NAMES = frozenset({"__pycache__", ".DS_Store", ".pytest_cache"})
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")
_EXCLUDE_GLOBS = ["**/__pycache__", "**/.pytest_cache", "**/.DS_Store", "**/*.pyc", "**/*.pyo"]


def _included_files(source_dir: Path) -> list[Path]:
    files = []
    for path in source_dir.rglob("*"):
        relative = path.relative_to(source_dir)
        if any(part in _EXCLUDED_NAMES for part in relative.parts):
            continue
        if path.is_file() and not path.name.endswith(_EXCLUDED_SUFFIXES):
            files.append(path)
    return sorted(files, key=lambda file: file.relative_to(source_dir).as_posix())


def artifacts_digest(source_dir: Path) -> str:
    """SHA-256 of an artifacts directory: relative names and contents of the shipped files.

    Parameters
    ----------
    source_dir:
        ``model_artifacts/<role>/``.

    Returns
    -------
    str
        64 hex digits, the same on every machine for the same files.
    """
    digest = hashlib.sha256()
    for path in _included_files(source_dir):
        digest.update(path.relative_to(source_dir).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class ServingArtifacts(Construct):
    """``model_artifacts/<role>/`` copied, uncompressed, into the served weights prefix.

    Under network isolation the container cannot fetch anything, so everything it needs must
    arrive through SageMaker's own download of one ``S3Prefix`` model data source into
    /opt/ml/model. CloudFormation's ``AWS::SageMaker::Model`` has no additional model data
    sources, so the artifacts (serving.properties, prompt template, index) are staged under
    ``<weights prefix>serving/<role>-<content digest>/`` by a ``BucketDeployment``. The digest
    in the path makes an artifact change a new Model (a reviewed, blue/green roll-out) while
    the hosts of the old Model keep their own copy; ``prune`` is off, so the weights and older
    copies beside the folder are never deleted.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    source_dir:
        The role's artifacts directory; it must hold ``serving.properties``.
    role:
        ``chat`` or ``moderation``.
    assets_bucket:
        The model-assets bucket.
    weights_prefix:
        Key prefix of the weights the endpoint serves (ends with ``/``).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        source_dir: Path,
        role: str,
        assets_bucket: ModelAssetsBucket,
        weights_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)
        if not (source_dir / "serving.properties").is_file():
            raise FileNotFoundError(f"{source_dir}/serving.properties is missing")
        self.digest = artifacts_digest(source_dir)
        self.folder = f"{SERVING_DIR}/{role}-{self.digest}/"
        self.key_prefix = f"{weights_prefix}{self.folder}"
        # By name and key, as the endpoint roles address it: no export of the bucket itself.
        bucket = s3.Bucket.from_bucket_attributes(
            self,
            "AssetsBucket",
            bucket_name=assets_bucket.bucket_physical_name,
            encryption_key=assets_bucket.key,
        )
        self.deployment = s3_deployment.BucketDeployment(
            self,
            "Deployment",
            sources=[s3_deployment.Source.asset(str(source_dir), exclude=_EXCLUDE_GLOBS)],
            destination_bucket=bucket,
            # A token (Fn::Join of one literal, a plain string in the template): CDK's length
            # check guards the ownership tag it puts on a destination bucket defined in the
            # same app (tag keys <= 128 characters); an imported bucket gets no such tag, and
            # a promoted run's weights prefix plus this folder is longer than the check allows.
            destination_key_prefix=Fn.join("", [self.key_prefix]),
            prune=False,
            retain_on_delete=True,
            extract=True,
        )
        self._acknowledge_handler(assets_bucket)

    @property
    def properties_path(self) -> str:
        """Where the container finds ``serving.properties`` (``SERVING_PROPERTIES_PATH``)."""
        return f"{MODEL_DIR}/{self.folder}serving.properties"

    def _acknowledge_handler(self, assets_bucket: ModelAssetsBucket) -> None:
        # The deployment's handler is a singleton function of the stack, shared by every
        # ServingArtifacts of the stack; acknowledge on its role and on the function itself.
        handler_role = self.deployment.handler_role
        stack = Stack.of(self)
        Validations.of(handler_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:"
                "policy/service-role/AWSLambdaBasicExecutionRole]",
                reason="CDK's deployment handler writes its own logs with exactly the actions "
                "of this AWS managed policy; it runs only during CloudFormation deployments.",
            ),
            *[
                Acknowledgment(
                    id=f"AwsSolutions::AwsSolutions-IAM5[Action::{action}]",
                    reason="CDK's deployment handler copies the artifact asset from the CDK "
                    "staging bucket into the assets bucket; these action groups are CDK's "
                    "grantRead/grantReadWrite, confined to those two buckets.",
                )
                for action in (
                    "s3:GetObject*",
                    "s3:GetBucket*",
                    "s3:List*",
                    "s3:Abort*",
                    "s3:DeleteObject*",
                    "kms:GenerateDataKey*",
                    "kms:ReEncrypt*",
                )
            ],
            Acknowledgment(
                id=nag_resource_id("AwsSolutions-IAM5", f"{assets_bucket.bucket_arn}/*"),
                reason="CDK's deployment handler writes the artifacts under the served weights "
                "prefix, which a promotion moves; it runs only during deployments, with "
                "prune off so that it never deletes weights.",
            ),
            Acknowledgment(
                id=nag_resource_id(
                    "AwsSolutions-IAM5",
                    f"arn:{pseudo.partition()}:s3:::cdk-hnb659fds-assets-{stack.account}-{stack.region}/*",
                ),
                reason="Read access to the CDK bootstrap staging bucket, from which the "
                "deployment handler takes the artifact asset.",
            ),
        )
        for child in stack.node.children:
            # CDK names the singleton handler Custom::CDKBucketDeployment<its own uuid>.
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                Validations.of(child).acknowledge(
                    Acknowledgment(
                        id="AwsSolutions::AwsSolutions-L1",
                        reason="CDK's BucketDeployment handler pins its own Python runtime, "
                        "upgraded with aws-cdk-lib; it runs only during deployments.",
                    )
                )
