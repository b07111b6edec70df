"""CloudFormation pseudo parameters as CDK tokens, read from the jsii runtime once per process.

Every read of ``Aws.PARTITION``, ``Aws.REGION`` or ``Aws.ACCOUNT_ID`` is a round trip to the
jsii node process that answers with the same token string; an environment builds well over a
hundred ARNs and finding ids from them, so constructs take the tokens from here instead.
"""

from __future__ import annotations

from aws_cdk import Aws

__all__ = ["ACCOUNT_ID", "PARTITION", "REGION"]

PARTITION: str = Aws.PARTITION
"""``AWS::Partition``."""
REGION: str = Aws.REGION
"""``AWS::Region``."""
ACCOUNT_ID: str = Aws.ACCOUNT_ID
"""``AWS::AccountId``."""
