"""CloudFormation pseudo parameters as CDK tokens, read from the jsii runtime once per process.

Every read of ``Aws.PARTITION``, ``Aws.REGION`` or ``Aws.ACCOUNT_ID`` is a round trip to the
jsii node process that answers with the same token string; an environment builds well over a
hundred ARNs and finding ids from them, so constructs take the tokens from here instead.

Functions, not constants: nothing here may call jsii while modules are imported, because a
synth's first call waits for node to finish loading the assemblies (stacks.jsii_loads).
"""

from __future__ import annotations

from functools import cache

from aws_cdk import Aws

__all__ = ["account_id", "partition", "region", "regional_arn"]


@cache
def partition() -> str:
    """``AWS::Partition``."""
    return Aws.PARTITION


@cache
def region() -> str:
    """``AWS::Region``."""
    return Aws.REGION


@cache
def account_id() -> str:
    """``AWS::AccountId``."""
    return Aws.ACCOUNT_ID


def regional_arn(service: str, resource: str) -> str:
    """``arn:<partition>:<service>:<region>:<account>:<resource>`` in the deploying account."""
    return f"arn:{partition()}:{service}:{region()}:{account_id()}:{resource}"
