"""Spells resource strings the way cdk-nag reports them, for finding-level acknowledgements."""

from __future__ import annotations

from aws_cdk import Aws

__all__ = ["nag_resource_id"]


def nag_resource_id(rule: str, resource: str) -> str:
    """Return the finding id cdk-nag gives ``rule`` for a wildcard ``resource``.

    Parameters
    ----------
    rule:
        The rule, e.g. ``AwsSolutions-IAM5``.
    resource:
        The resource string as written in the policy, possibly holding pseudo-parameter tokens.

    Returns
    -------
    str
        E.g. ``AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::bucket/models/x/*]``.
    """
    for token, name in (
        (Aws.PARTITION, "AWS::Partition"),
        (Aws.REGION, "AWS::Region"),
        (Aws.ACCOUNT_ID, "AWS::AccountId"),
    ):
        resource = resource.replace(token, f"<{name}>")
    return f"{rule}[Resource::{resource}]"
