"""Spells resource strings the way cdk-nag reports them, for finding-level acknowledgements."""

from __future__ import annotations

from stacks.constructs import pseudo

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
        E.g. ``AwsSolutions::AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::b/x/*]``:
        the validation plugin's name, then the finding, as synth's report spells it.
    """
    for token, name in (
        (pseudo.partition(), "AWS::Partition"),
        (pseudo.region(), "AWS::Region"),
        (pseudo.account_id(), "AWS::AccountId"),
    ):
        resource = resource.replace(token, f"<{name}>")
    return f"{rule.split('-')[0]}::{rule}[Resource::{resource}]"
