"""Promote a registered, approved model package: point cdk.json's chat model at its weights.

``make promote ENV=<env> PACKAGE=<arn> [APPROVE=1]`` checks the package's approval status
(approving a pending one only with the explicit flag), sets the chat model's
``weights_prefix`` and ``model_package_arn`` in cdk.json with a minimal text edit, and prints
the unified diff. Nothing in AWS changes but the approval: the reviewed commit and an ordinary
``cdk deploy`` roll the endpoint out through CloudFormation.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import boto3

from scripts.cdk_json_edit import set_member
from stacks.config import ENVIRONMENTS_CONTEXT_KEY, ConfigError, EnvironmentConfig, load_environment

__all__ = ["PromotionError", "main", "promote", "weights_prefix_of"]

APPROVED = "Approved"
PENDING = "PendingManualApproval"


class PromotionError(RuntimeError):
    """The package cannot be promoted into this environment; the message says why."""


def weights_prefix_of(package: dict[str, Any], bucket: str) -> str:
    """The key prefix of a package's uncompressed weights in the environment's bucket.

    Parameters
    ----------
    package:
        A ``DescribeModelPackage`` response.
    bucket:
        The environment's assets bucket name, or its name up to the account when the
        environment does not pin account and region (``chatbot-<env>-assets-``).

    Returns
    -------
    str
        The key prefix, ending with ``/``.
    """
    try:
        [container] = package["InferenceSpecification"]["Containers"]
        source = container["ModelDataSource"]["S3DataSource"]
    except (KeyError, ValueError):
        raise PromotionError(
            "the package has no single container with a ModelDataSource; only packages the "
            "customization pipeline registered can be promoted"
        ) from None
    if source.get("S3DataType") != "S3Prefix" or source.get("CompressionType") != "None":
        raise PromotionError("the package's weights are not an uncompressed S3 prefix")
    uri: str = source["S3Uri"]
    name, _, prefix = uri.removeprefix("s3://").partition("/")
    if not name.startswith(bucket):
        raise PromotionError(
            f"the package's weights are in bucket {name!r}, not this environment's "
            f"({bucket}...); its endpoints cannot read them"
        )
    return prefix if prefix.endswith("/") else prefix + "/"


def _bucket_name(config: EnvironmentConfig) -> str:
    if config.account is None or config.region is None:
        return f"chatbot-{config.name}-assets-"
    return f"chatbot-{config.name}-assets-{config.account}-{config.region}"


def promote(
    cdk_json: str,
    env_name: str,
    package_arn: str,
    *,
    approve: bool,
    client: Any,
    dry_run: bool = False,
) -> tuple[str, str]:
    """Check (or approve) the package and return cdk.json's text before and after promotion.

    Parameters
    ----------
    cdk_json:
        The text of cdk.json.
    env_name:
        The environment to promote into.
    package_arn:
        The model package's ARN.
    approve:
        Approve a package that is pending manual approval.
    client:
        A boto3 SageMaker client.
    dry_run:
        Check only: never approve.

    Returns
    -------
    tuple[str, str]
        The text before and after.

    Raises
    ------
    PromotionError
        If the package is not approved (and ``approve`` is off or it was rejected), points at
        another environment's bucket, or the edited settings do not validate.
    """
    context = json.loads(cdk_json)["context"]
    config = load_environment(context, env_name)
    package = client.describe_model_package(ModelPackageName=package_arn)
    status = package["ModelApprovalStatus"]
    if status not in (APPROVED, PENDING) or (status == PENDING and not approve):
        hint = " (make promote ... APPROVE=1 approves it)" if status == PENDING else ""
        raise PromotionError(f"model package {package_arn} is {status}{hint}")
    prefix = weights_prefix_of(package, _bucket_name(config))
    path = ["context", ENVIRONMENTS_CONTEXT_KEY, env_name, "chat", "model"]
    edited = set_member(cdk_json, path, "weights_prefix", prefix)
    edited = set_member(edited, path, "model_package_arn", package_arn)
    try:
        load_environment(json.loads(edited)["context"], env_name)
    except ConfigError as error:
        raise PromotionError(f"the promoted settings do not validate:\n{error}") from None
    if status == PENDING and not dry_run:
        client.update_model_package(
            ModelPackageArn=package_arn,
            ModelApprovalStatus=APPROVED,
            ApprovalDescription=f"approved for {env_name} with make promote",
        )
    return cdk_json, edited


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of ``make promote``; returns the exit status.

    Parameters
    ----------
    argv:
        Arguments without the program name; defaults to ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success (diff printed, cdk.json written), 1 when promotion is refused.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--env", required=True, help="environment in cdk.json")
    parser.add_argument("--package", required=True, help="model package ARN")
    parser.add_argument("--approve", action="store_true", help="approve a pending package")
    parser.add_argument("--cdk-json", type=Path, default=Path("cdk.json"))
    parser.add_argument("--dry-run", action="store_true", help="print the diff only")
    args = parser.parse_args(argv)
    region = args.package.split(":")[3] if args.package.count(":") >= 5 else None
    # AWS_ENDPOINT_URL_SAGEMAKER (boto3's own setting) points tests at a local server.
    client = boto3.client("sagemaker", region_name=region or None)
    before = args.cdk_json.read_text(encoding="utf-8")
    try:
        before, after = promote(
            before,
            args.env,
            args.package,
            approve=args.approve,
            client=client,
            dry_run=args.dry_run,
        )
    except (PromotionError, ConfigError) as error:
        print(f"make promote: {error}", file=sys.stderr)
        return 1
    diff = difflib.unified_diff(
        before.splitlines(keepends=True),
        after.splitlines(keepends=True),
        fromfile=f"a/{args.cdk_json.name}",
        tofile=f"b/{args.cdk_json.name}",
    )
    sys.stdout.writelines(diff)
    if before == after:
        print(f"{args.env} already serves {args.package}; cdk.json unchanged")
        return 0
    if not args.dry_run:
        args.cdk_json.write_text(after, encoding="utf-8")
        print(
            f"\ncdk.json updated. Review and commit it, then roll it out with: "
            f"npx cdk diff -c env={args.env} && npx cdk deploy -c env={args.env} --all"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
