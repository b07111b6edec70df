"""DynamoDB session table: one item per message, a header item per session, GSI by owner."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from constructs import Construct

from chatbot_contracts import sessions as schema

__all__ = ["SessionTable"]

# What the front door does with sessions: read, conditional writes, listing by owner.
_SESSION_DATA_ACTIONS = (
    "dynamodb:BatchGetItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:ConditionCheckItem",
    "dynamodb:DeleteItem",
    "dynamodb:DescribeTable",
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:Query",
    "dynamodb:UpdateItem",
)


def _string(name: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)


class SessionTable(Construct):
    """The session table of docs/interfaces.md, encrypted with its own KMS key.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    protect_data:
        RETAIN on stack deletion, deletion protection on the table and key; otherwise both are
        destroyed with the stack (development environments).
    """

    def __init__(self, scope: Construct, construct_id: str, *, protect_data: bool) -> None:
        super().__init__(scope, construct_id)
        removal_policy = RemovalPolicy.RETAIN if protect_data else RemovalPolicy.DESTROY
        self.key = kms.Key(
            self,
            "Key",
            description="Encrypts the chatbot session table",
            enable_key_rotation=True,
            removal_policy=removal_policy,
        )
        self.table = dynamodb.Table(
            self,
            "Table",
            partition_key=dynamodb.Attribute(
                name=schema.PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            sort_key=_string(schema.SORT_KEY),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=schema.TTL_ATTRIBUTE,
            deletion_protection=protect_data,
            removal_policy=removal_policy,
        )
        # Sparse: only session header items carry `owner`.
        self.table.add_global_secondary_index(
            index_name=schema.OWNER_INDEX_NAME,
            partition_key=dynamodb.Attribute(
                name=schema.OWNER_INDEX_PARTITION_KEY, type=dynamodb.AttributeType.STRING
            ),
            sort_key=dynamodb.Attribute(
                name=schema.OWNER_INDEX_SORT_KEY, type=dynamodb.AttributeType.STRING
            ),
            projection_type=dynamodb.ProjectionType.ALL,
        )

    @property
    def owner_index_arn(self) -> str:
        """ARN of the ``by-owner`` index."""
        return f"{self.table.table_arn}/index/{schema.OWNER_INDEX_NAME}"

    def grant_session_access(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` read and write sessions: this table and its owner index only.

        Parameters
        ----------
        grantee:
            The principal, e.g. the front-door function.

        Returns
        -------
        iam.Grant
            The data-plane grant (the KMS grant is added alongside).
        """
        # Named actions instead of grant_encrypt_decrypt's GenerateDataKey*/ReEncrypt*.
        self.key.grant(
            grantee, "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"
        )
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=list(_SESSION_DATA_ACTIONS),
            resource_arns=[self.table.table_arn, self.owner_index_arn],
        )
