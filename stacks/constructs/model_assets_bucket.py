"""S3 bucket for model weights and retrieval indexes: KMS, TLS only, versioned, private."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Duration, RemovalPolicy, Validations
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.constructs import pseudo

__all__ = ["MODELS_PREFIX", "ModelAssetsBucket"]

MODELS_PREFIX = "models/"


class ModelAssetsBucket(Construct):
    """The model-assets bucket, with a server-access-log bucket beside it.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name; the bucket is named ``chatbot-<env>-assets-<account>-<region>``.
    protect_data:
        RETAIN buckets and key on stack deletion; otherwise they are destroyed with the stack
        (objects must be emptied first; ``scripts/stage_model.py`` wrote them).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, env_name: str, protect_data: bool
    ) -> None:
        super().__init__(scope, construct_id)
        # Log delivery through a bucket policy, not the legacy LogDeliveryWrite ACL, whatever
        # the app's feature flags say.
        self.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
        # A predictable name: operators stage weights into it by name, and endpoint roles in
        # other stacks of the same account and region scope their grants to it without a
        # cross-stack export (a bucket holding weights is never meant to be replaced).
        account, region = pseudo.account_id(), pseudo.region()
        self.bucket_physical_name = f"chatbot-{env_name}-assets-{account}-{region}"
        removal_policy = RemovalPolicy.RETAIN if protect_data else RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts chatbot model weights and retrieval indexes",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        # Access-log delivery supports SSE-S3 only, hence a separate bucket without KMS.
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=removal_policy,
        )
        Validations.of(self.access_logs).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-S1",
                reason="This is the server-access-log destination of the model-assets bucket; "
                "logging it into itself would loop. Writes come only from the S3 log delivery "
                "service (bucket policy) over TLS.",
            )
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=self.bucket_physical_name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="model-assets/",
            removal_policy=removal_policy,
        )

    @property
    def bucket_arn(self) -> str:
        """The bucket's ARN, built from its name so other stacks need no export."""
        return f"arn:{pseudo.partition()}:s3:::{self.bucket_physical_name}"

    def model_prefix(self, weights_name: str) -> str:
        """Key prefix of one model's weights, ``models/<name>/``."""
        return f"{MODELS_PREFIX}{weights_name}/"

    def model_uri(self, weights_name: str) -> str:
        """``s3://`` URI of one model's weights, as ``OPTION_MODEL_ID`` expects."""
        return f"s3://{self.bucket_physical_name}/{self.model_prefix(weights_name)}"

    def model_objects_arn(self, weights_name: str) -> str:
        """ARN pattern of all objects of one model's weights."""
        return self.prefix_objects_arn(self.model_prefix(weights_name))

    def prefix_uri(self, prefix: str) -> str:
        """``s3://`` URI of a key prefix (``models/<name>/``, a customization run's output)."""
        return f"s3://{self.bucket_physical_name}/{prefix}"

    def prefix_objects_arn(self, prefix: str) -> str:
        """ARN pattern of all objects under a key prefix."""
        return f"{self.bucket_arn}/{prefix}*"

    def grant_read_model(self, grantee: iam.IGrantable, weights_name: str) -> None:
        """Let ``grantee`` list and read ``models/<weights_name>/`` only, and decrypt it.

        Parameters
        ----------
        grantee:
            The principal, e.g. an endpoint's execution role.
        weights_name:
            The model's folder under ``models/``.
        """
        self.grant_read_prefix(grantee, self.model_prefix(weights_name))

    def grant_read_prefix(self, grantee: iam.IGrantable, prefix: str) -> None:
        """Let ``grantee`` list and read the objects under ``prefix`` only, and decrypt them.

        Parameters
        ----------
        grantee:
            The principal, e.g. an endpoint's execution role.
        prefix:
            A key prefix ending with ``/``.
        """
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["s3:GetObject"],
            resource_arns=[self.prefix_objects_arn(prefix)],
        )
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket"],
                resources=[self.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        self.key.grant_decrypt(grantee)
