"""Read-only checks of the target AWS account (``make preflight ENV=<env>``), one line each.

Every check declares the AWS calls it makes and the IAM actions they need, so the docs' table
and the read-only IAM policy (``python -m preflight policy``) come from the same list.
"""

from __future__ import annotations

import inspect
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from preflight.report import CheckResult, fail, note, ok
from stacks.base_image import resolve_base_image
from stacks.config import BYTES_PER_PARAMETER, EnvironmentConfig, ModelSettings
from stacks.idle_cost import PRICES_AS_OF, PRICES_REGION, idle_cost

__all__ = [
    "BOOTSTRAP_STACK_NAME",
    "CHECKS",
    "DEFAULT_BOOTSTRAP_VERSION",
    "DEFAULT_QUALIFIER",
    "AccountContext",
    "Check",
    "WeightsListing",
    "read_policy",
    "required_bootstrap_version",
    "run_checks",
]

BOOTSTRAP_STACK_NAME = "CDKToolkit"
DEFAULT_QUALIFIER = "hnb659fds"
# aws-cdk-lib's DefaultStackSynthesizer writes a CheckBootstrapVersion rule requiring 6 into every
# template, and its asset manifests require 6 too; the assembly says so per artifact
# (`requiresBootstrapStackVersion`), which wins when an assembly is at hand.
DEFAULT_BOOTSTRAP_VERSION = 6
# Lambda keeps this much account concurrency unreserved; a reservation that would leave less
# is refused (PutFunctionConcurrency).
LAMBDA_MIN_UNRESERVED = 100
# API Gateway REST integrations: buffered ones time out at 29 s unless the "Maximum integration
# timeout in milliseconds" quota is raised; STREAM-mode ones may run up to 15 minutes without it.
BUFFERED_INTEGRATION_TIMEOUT_MS = 29_000
STREAM_INTEGRATION_MAX_MS = 15 * 60 * 1000
API_TIMEOUT_QUOTA_NAME = "Maximum integration timeout in milliseconds"
WEIGHTS_SIZE_TOLERANCE = 0.10
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
DLC_ACCOUNTS = frozenset({"763104351884"})

Backend = Literal["moto", "Stubber", "none"]
ClientFactory = Callable[[str], Any]


@dataclass
class AccountContext:
    """What the checks need: the environment, a client per service, and what they learn.

    Parameters
    ----------
    config:
        The environment's validated settings.
    session:
        Where credentials and the default region come from.
    clients:
        Prepared clients by service name (tests: Stubber-activated ones); others are created
        from ``session`` with ``endpoint_url``.
    endpoint_url:
        Send every created client there (tests: a moto server); ``None`` for AWS.
    required_bootstrap_version, bootstrap_source:
        What the app's assets need, and where that figure came from.
    qualifier:
        The CDK bootstrap qualifier.
    """

    config: EnvironmentConfig
    session: boto3.Session
    clients: Mapping[str, Any] = field(default_factory=dict)
    endpoint_url: str | None = None
    required_bootstrap_version: int = DEFAULT_BOOTSTRAP_VERSION
    bootstrap_source: str = "aws-cdk-lib's default synthesizer"
    qualifier: str = DEFAULT_QUALIFIER
    account: str | None = None
    region: str | None = None
    _quotas: dict[str, dict[str, float]] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        """A client for ``service`` in the target region."""
        if service in self.clients:
            return self.clients[service]
        return self.session.client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10),
        )

    @property
    def bucket_name(self) -> str:
        """The model-assets bucket, named as the Stateful stack names it."""
        return f"chatbot-{self.config.name}-assets-{self.account}-{self.region}"

    def quotas(self, service_code: str) -> dict[str, float]:
        """Quota values by name: applied values over AWS defaults, fetched once per service."""
        if service_code not in self._quotas:
            client = self.client("service-quotas")
            values: dict[str, float] = {}
            for operation in ("list_aws_default_service_quotas", "list_service_quotas"):
                token: str | None = None
                while True:
                    kwargs: dict[str, Any] = {"ServiceCode": service_code, "MaxResults": 100}
                    if token:
                        kwargs["NextToken"] = token
                    page = getattr(client, operation)(**kwargs)
                    for quota in page.get("Quotas", []):
                        values[quota["QuotaName"]] = float(quota["Value"])
                    token = page.get("NextToken")
                    if not token:
                        break
            self._quotas[service_code] = values
        return self._quotas[service_code]


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, what it calls, the IAM actions that needs, how it is tested."""

    name: str
    run: Callable[[AccountContext], list[CheckResult]]
    calls: tuple[str, ...]
    permissions: tuple[str, ...]
    tested_with: Backend
    summary: str


# --- credentials and target ----------------------------------------------------------------


def check_credentials(ctx: AccountContext) -> list[CheckResult]:
    """Credentials are present and valid; records the account."""
    credentials = ctx.session.get_credentials()
    if credentials is None:
        raise NoCredentialsError()
    # STS answers in every region; an environment-agnostic target may not know its region yet.
    sts = ctx.clients.get("sts") or ctx.session.client(
        "sts", region_name=ctx.region or "us-east-1", endpoint_url=ctx.endpoint_url
    )
    identity = sts.get_caller_identity()
    ctx.account = str(identity["Account"])
    return [ok("credentials", f"{identity['Arn']} (from {credentials.method})")]


def check_target(ctx: AccountContext) -> list[CheckResult]:
    """Account and region of the credentials match the environment in cdk.json."""
    config = ctx.config
    if config.account is not None and config.account != ctx.account:
        return [
            fail(
                "target",
                f"credentials are for account {ctx.account} but cdk.json deploys "
                f"{config.name} to {config.account}: use credentials (AWS_PROFILE) of "
                f"{config.account}",
            )
        ]
    if config.region is None:
        return [
            ok(
                "target",
                f"{config.name} is environment-agnostic in cdk.json: it deploys to "
                f"{ctx.account}/{ctx.region}, the credentials' account and default region",
            )
        ]
    message = f"account {ctx.account}, region {config.region} as cdk.json sets for {config.name}"
    session_region = ctx.session.region_name
    if session_region and session_region != config.region:
        message += f" (your default region {session_region} is not used: cdk.json wins)"
    return [ok("target", message)]


# --- CDK bootstrap -------------------------------------------------------------------------


def required_bootstrap_version(assembly: Path) -> tuple[int, str] | None:
    """The highest ``requiresBootstrapStackVersion`` of a synthesized cloud assembly.

    Parameters
    ----------
    assembly:
        ``cdk.out`` (nested stage assemblies are read too).

    Returns
    -------
    tuple[int, str] | None
        The version and the manifest that asks for it; ``None`` without an assembly.
    """
    best: tuple[int, str] | None = None
    for manifest in sorted(assembly.glob("**/manifest.json")):
        try:
            artifacts = json.loads(manifest.read_text()).get("artifacts", {})
        except (OSError, ValueError):
            continue
        for artifact in artifacts.values():
            version = (artifact.get("properties") or {}).get("requiresBootstrapStackVersion")
            if isinstance(version, int) and (best is None or version > best[0]):
                best = (version, str(manifest))
    return best


def check_bootstrap(ctx: AccountContext) -> list[CheckResult]:
    """The CDKToolkit stack exists and its version is at least what the assets need."""
    fix = f"run `npx cdk bootstrap aws://{ctx.account}/{ctx.region}`"
    try:
        stacks = ctx.client("cloudformation").describe_stacks(StackName=BOOTSTRAP_STACK_NAME)
    except ClientError as error:
        if error.response["Error"]["Code"] == "ValidationError":
            return [fail("bootstrap", f"no {BOOTSTRAP_STACK_NAME} stack in {ctx.region}: {fix}")]
        raise
    stack = stacks["Stacks"][0]
    status = stack["StackStatus"]
    if not status.endswith("_COMPLETE") or "ROLLBACK" in status or "DELETE" in status:
        return [fail("bootstrap", f"{BOOTSTRAP_STACK_NAME} is {status}: {fix} again")]
    parameter = f"/cdk-bootstrap/{ctx.qualifier}/version"
    try:
        value = ctx.client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"]
        source = parameter
    except ClientError as error:
        if error.response["Error"]["Code"] != "ParameterNotFound":
            raise
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        if "BootstrapVersion" not in outputs:
            return [
                fail(
                    "bootstrap",
                    f"{BOOTSTRAP_STACK_NAME} has no version ({parameter} missing): {fix}",
                )
            ]
        value, source = outputs["BootstrapVersion"], "the stack output BootstrapVersion"
    version = int(value)
    need = ctx.required_bootstrap_version
    if version < need:
        return [
            fail(
                "bootstrap",
                f"version {version} ({source}) is older than the {need} the assets need "
                f"({ctx.bootstrap_source}): {fix} to upgrade it",
            )
        ]
    return [ok("bootstrap", f"version {version} >= {need} ({ctx.bootstrap_source})")]


# --- SageMaker quotas ----------------------------------------------------------------------


def endpoint_instance_needs(config: EnvironmentConfig) -> Counter[str]:
    """Instances per type both endpoints can run at once, roll-outs included.

    Per endpoint :attr:`~stacks.config.EndpointSettings.max_instances`: a plain endpoint's
    blue/green update runs a green fleet as large as the blue one (both endpoints update in
    the same deploy); an inference component's endpoint never exceeds its managed-scaling
    maximum, which leaves room for the one copy a rolling step adds.
    """
    needs: Counter[str] = Counter()
    for settings in (config.chat, config.moderation):
        needs[settings.instance_type] += settings.max_instances
    return needs


def _processing_instance_type() -> str:
    # The dataset-validation job's type is the pipeline construct's default, not a setting.
    from stacks.constructs.customization_pipeline import CustomizationPipeline

    default = inspect.signature(CustomizationPipeline.__init__).parameters[
        "processing_instance_type"
    ]
    return str(default.default)


def customization_job_needs(config: EnvironmentConfig) -> list[tuple[str, str]]:
    """(instance type, quota usage) pairs the customization jobs need one instance of each."""
    if config.customization is None:
        return []
    custom = config.customization
    training = "spot training job usage" if custom.use_spot else "training job usage"
    return [
        (custom.training_instance_type, training),
        (custom.evaluation_instance_type, "processing job usage"),
        (_processing_instance_type(), "processing job usage"),
    ]


def _quota_result(ctx: AccountContext, instance_type: str, usage: str, need: int) -> CheckResult:
    quota_name = f"{instance_type} for {usage}"
    name = f"quota {quota_name}"
    value = ctx.quotas("sagemaker").get(quota_name)
    if value is None:
        return fail(
            name,
            f"Service Quotas lists no quota {quota_name!r} in {ctx.region}: the instance type "
            "is not offered there; pick another instance type or region",
        )
    if value < need:
        return fail(
            name,
            f"quota {value:g} < {need} needed: request an increase (Service Quotas console, "
            f"SageMaker, {quota_name!r}) to at least {need}",
        )
    return ok(name, f"quota {value:g} >= {need} needed")


def check_endpoint_quotas(ctx: AccountContext) -> list[CheckResult]:
    """SageMaker endpoint usage quotas cover the endpoints at their maximum size."""
    needs = endpoint_instance_needs(ctx.config)
    return [
        _quota_result(ctx, instance_type, "endpoint usage", need)
        for instance_type, need in sorted(needs.items())
    ]


def check_customization_quotas(ctx: AccountContext) -> list[CheckResult]:
    """Training and processing quotas for the customization jobs, when that section is on."""
    needs = customization_job_needs(ctx.config)
    if not needs:
        return [ok("quota customization", "no customization section: no jobs to run")]
    counts = Counter(needs)
    return [
        _quota_result(ctx, instance_type, usage, count)
        for (instance_type, usage), count in sorted(counts.items())
    ]


# --- S3: assets bucket and weights ---------------------------------------------------------


def _stateful_fix(ctx: AccountContext) -> str:
    return (
        f"deploy Stateful first: `npx cdk deploy -c env={ctx.config.name} "
        f"chatbot-{ctx.config.name}/Stateful`"
    )


def _bucket_missing(ctx: AccountContext) -> bool:
    try:
        ctx.client("s3").head_bucket(Bucket=ctx.bucket_name)
    except ClientError as error:
        if error.response["Error"]["Code"] in {"404", "NoSuchBucket", "NotFound"}:
            return True
        raise
    return False


def check_assets_bucket(ctx: AccountContext) -> list[CheckResult]:
    """The model-assets bucket exists (it is created by the Stateful stack)."""
    if _bucket_missing(ctx):
        return [fail("assets bucket", f"{ctx.bucket_name} does not exist: {_stateful_fix(ctx)}")]
    return [ok("assets bucket", f"{ctx.bucket_name} exists")]


@dataclass(frozen=True, slots=True)
class WeightsListing:
    """What a weights prefix holds: file names (relative to the prefix) and their sizes."""

    sizes: Mapping[str, int]

    def problems(self, model: ModelSettings) -> list[str]:
        """What is missing or wrong for ``model``; empty when the weights look complete."""
        names = set(self.sizes)
        found = []
        if "config.json" not in names:
            found.append("no config.json")
        if "tokenizer_config.json" not in names or not names & set(TOKENIZER_FILES):
            found.append(
                "no tokenizer (tokenizer_config.json and one of " + ", ".join(TOKENIZER_FILES) + ")"
            )
        safetensors = sum(
            size for name, size in self.sizes.items() if name.endswith(".safetensors")
        )
        expected = model.parameters_billion * 1e9 * BYTES_PER_PARAMETER[model.dtype]
        if safetensors == 0:
            found.append("no *.safetensors")
        elif abs(safetensors - expected) > WEIGHTS_SIZE_TOLERANCE * expected:
            found.append(
                f"*.safetensors total {safetensors / 1e9:.2f} GB, expected "
                f"{expected / 1e9:.2f} GB ({model.parameters_billion}B parameters x "
                f"{BYTES_PER_PARAMETER[model.dtype]} bytes of {model.dtype}, +-10 %)"
            )
        return found


def list_weights(ctx: AccountContext, prefix: str) -> WeightsListing:
    """Sizes of the objects under ``prefix`` of the assets bucket."""
    paginator = ctx.client("s3").get_paginator("list_objects_v2")
    sizes = {}
    for page in paginator.paginate(Bucket=ctx.bucket_name, Prefix=prefix):
        for item in page.get("Contents", []):
            sizes[item["Key"][len(prefix) :]] = int(item["Size"])
    return WeightsListing(sizes)


def _weights_check(
    role: Literal["chat", "moderation"],
) -> Callable[[AccountContext], list[CheckResult]]:
    def run(ctx: AccountContext) -> list[CheckResult]:
        model = getattr(ctx.config, role).model
        prefix = f"models/{model.weights_name}/"
        name = f"weights {role}"
        uri = f"s3://{ctx.bucket_name}/{prefix}"
        stage = (
            f"`make stage-model SRC={model.hf_repo_id} BUCKET={ctx.bucket_name} "
            f"NAME={model.weights_name}`"
        )
        if _bucket_missing(ctx):
            return [fail(name, f"{_stateful_fix(ctx)}, then stage the weights: {stage}")]
        listing = list_weights(ctx, prefix)
        if not listing.sizes:
            return [fail(name, f"{uri} is empty: stage the weights with {stage}")]
        problems = listing.problems(model)
        if problems:
            return [fail(name, f"{uri}: {'; '.join(problems)}: re-stage them with {stage}")]
        total = sum(s for n, s in listing.sizes.items() if n.endswith(".safetensors"))
        return [ok(name, f"{uri}: config, tokenizer, {total / 1e9:.2f} GB of safetensors")]

    return run


# --- API Gateway, Lambda, base image -------------------------------------------------------


def check_api_timeout(ctx: AccountContext) -> list[CheckResult]:
    """API Gateway's integration-timeout quota allows the configured integration timeouts."""
    # Imported here: the constants sit beside the API they configure, in the construct module.
    from stacks.constructs.front_door_api import STREAM_INTEGRATION_TIMEOUT_MINUTES

    stream_ms = STREAM_INTEGRATION_TIMEOUT_MINUTES * 60_000
    name = "api gateway timeout"
    if stream_ms > STREAM_INTEGRATION_MAX_MS:
        return [
            fail(
                name,
                f"the streaming integration timeout {stream_ms} ms exceeds API Gateway's "
                f"{STREAM_INTEGRATION_MAX_MS} ms maximum for STREAM integrations: lower "
                "STREAM_INTEGRATION_TIMEOUT_MINUTES",
            )
        ]
    quota = ctx.quotas("apigateway").get(API_TIMEOUT_QUOTA_NAME)
    if quota is None:
        return [
            fail(
                name,
                f"Service Quotas lists no {API_TIMEOUT_QUOTA_NAME!r} for apigateway in "
                f"{ctx.region}: check the region supports REST API integration timeouts",
            )
        ]
    if quota < BUFFERED_INTEGRATION_TIMEOUT_MS:
        return [
            fail(
                name,
                f"{API_TIMEOUT_QUOTA_NAME} is {quota:g} < {BUFFERED_INTEGRATION_TIMEOUT_MS} ms "
                "the buffered routes use: request the quota back to at least 29000",
            )
        ]
    return [
        ok(
            name,
            f"quota {quota:g} ms covers the buffered routes' {BUFFERED_INTEGRATION_TIMEOUT_MS} ms; "
            f"the chat route's {stream_ms} ms is a STREAM integration (up to "
            f"{STREAM_INTEGRATION_MAX_MS} ms without a quota increase)",
        )
    ]


def check_lambda_concurrency(ctx: AccountContext) -> list[CheckResult]:
    """Unreserved account concurrency leaves room for the front door's reservation."""
    settings = ctx.client("lambda").get_account_settings()
    limit = int(settings["AccountLimit"]["ConcurrentExecutions"])
    unreserved = int(settings["AccountLimit"]["UnreservedConcurrentExecutions"])
    reserve = ctx.config.front_door.reserved_concurrency
    name = "lambda concurrency"
    if unreserved - reserve < LAMBDA_MIN_UNRESERVED:
        return [
            fail(
                name,
                f"reserving {reserve} of the {unreserved} unreserved (account limit {limit}) "
                f"would leave fewer than {LAMBDA_MIN_UNRESERVED}: request a higher "
                "'Concurrent executions' quota or lower front_door.reserved_concurrency",
            )
        ]
    return [
        ok(
            name,
            f"{unreserved} unreserved of {limit}; {reserve} reserved leaves "
            f"{unreserved - reserve} >= {LAMBDA_MIN_UNRESERVED}",
        )
    ]


def _parse_ecr_uri(uri: str) -> tuple[str, str, str, str] | None:
    # <account>.dkr.ecr.<region>.amazonaws.com[.cn]/<repository>:<tag>
    host, _, rest = uri.partition("/")
    parts = host.split(".")
    if len(parts) < 6 or parts[1:3] != ["dkr", "ecr"] or ":" not in rest:
        return None
    repository, _, tag = rest.rpartition(":")
    return parts[0], parts[3], repository, tag


def check_base_image(ctx: AccountContext) -> list[CheckResult]:
    """The base image's ECR registry lets these credentials pull the image."""
    uri = resolve_base_image(ctx.config.base_image, ctx.config.region or ctx.region)
    parsed = _parse_ecr_uri(uri)
    name = "base image"
    if parsed is None:
        return [
            note(
                name,
                f"{uri} is not in ECR, so pull access cannot be checked with AWS calls: "
                "`docker pull` it once from the deploying machine",
            )
        ]
    registry, region, repository, tag = parsed
    ecr = ctx.clients.get("ecr") or ctx.session.client(
        "ecr", region_name=region, endpoint_url=ctx.endpoint_url
    )
    ecr.get_authorization_token()
    response = ecr.batch_get_image(
        registryId=registry,
        repositoryName=repository,
        imageIds=[{"imageTag": tag}],
        acceptedMediaTypes=["application/vnd.docker.distribution.manifest.v2+json"],
    )
    if response.get("failures") or not response.get("images"):
        reasons = "; ".join(
            f"{f.get('failureCode')}: {f.get('failureReason')}"
            for f in response.get("failures", [])
        )
        return [
            fail(
                name,
                f"{uri} cannot be pulled ({reasons or 'no image returned'}): pick a "
                "base_image.version the region's DLC registry has, or pin base_image.uri",
            )
        ]
    return [ok(name, f"{uri} is pullable with these credentials")]


def _fix_for_error(check: Check, error: Exception) -> str:
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", "")
        operation = error.operation_name
        if "AccessDenied" in code or code in {"UnauthorizedOperation", "403", "Forbidden"}:
            return (
                f"access denied on {operation} ({code}): grant "
                f"{', '.join(check.permissions)} (docs/infra.md has the read-only policy)"
            )
        if code in {"ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"}:
            return f"{code} on {operation}: refresh the credentials (e.g. `aws sso login`)"
        return f"{operation} failed with {code}: {message}"
    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found (no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
            "~/.aws/credentials or ~/.aws/config profile, SSO session or container role): "
            "configure credentials for the target account, e.g. `aws configure sso` then "
            "`export AWS_PROFILE=<profile>`"
        )
    if isinstance(error, NoRegionError):
        return "no region: set AWS_REGION (or a profile region) or give the environment a region"
    if isinstance(error, BotoCoreError):
        return f"{type(error).__name__}: {error}"
    return f"unexpected {type(error).__name__}: {error}"


# --- cost ------------------------------------------------------------------------------------


def check_idle_cost(ctx: AccountContext) -> list[CheckResult]:
    """Warns when the environment can never scale to zero, with its idle cost per day."""
    cost = idle_cost(ctx.config)
    prices = f"on-demand prices of {PRICES_REGION} as of {PRICES_AS_OF}"
    if cost.can_reach_zero:
        return [
            ok(
                "idle cost",
                f"the models scale to zero when idle: about ${cost.after_usd_per_day:.2f} a day "
                f"idle instead of ${cost.before_usd_per_day:.2f} ({prices})",
            )
        ]
    return [
        note(
            "idle cost",
            f"warning: {ctx.config.name} can never scale to zero; idle it costs about "
            f"${cost.before_usd_per_day:.2f} a day ({prices}). If that is not intended, host the "
            "models as inference components with hosting.scale_to_zero (docs/infra.md)",
        )
    ]


CHECKS: tuple[Check, ...] = (
    Check(
        "credentials",
        check_credentials,
        ("sts:GetCallerIdentity",),
        (),
        "moto",
        "credentials are present and valid",
    ),
    Check(
        "target",
        check_target,
        (),
        (),
        "moto",
        "the credentials' account (and region) match the environment in cdk.json",
    ),
    Check(
        "bootstrap",
        check_bootstrap,
        ("cloudformation:DescribeStacks", "ssm:GetParameter"),
        ("cloudformation:DescribeStacks", "ssm:GetParameter"),
        "moto",
        "the CDKToolkit stack exists with a version >= what the assembly's assets require",
    ),
    Check(
        "quota endpoints",
        check_endpoint_quotas,
        ("service-quotas:ListServiceQuotas", "service-quotas:ListAWSDefaultServiceQuotas"),
        ("servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"),
        "Stubber",
        "SageMaker '<type> for endpoint usage' >= maximum instances, summed over both endpoints "
        "(plus the chat fleet again for the customization blue/green roll-out)",
    ),
    Check(
        "quota customization",
        check_customization_quotas,
        ("service-quotas:ListServiceQuotas", "service-quotas:ListAWSDefaultServiceQuotas"),
        ("servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"),
        "Stubber",
        "SageMaker (spot) training and processing job usage for the customization jobs",
    ),
    Check(
        "assets bucket",
        check_assets_bucket,
        ("s3:HeadBucket",),
        ("s3:ListBucket",),
        "moto",
        "the model-assets bucket exists (deploy Stateful first otherwise)",
    ),
    Check(
        "weights chat",
        _weights_check("chat"),
        ("s3:HeadBucket", "s3:ListObjectsV2"),
        ("s3:ListBucket",),
        "moto",
        "models/<weights_name>/ holds config.json, tokenizer files and safetensors of "
        "parameters x dtype bytes (+-10 %)",
    ),
    Check(
        "weights moderation",
        _weights_check("moderation"),
        ("s3:HeadBucket", "s3:ListObjectsV2"),
        ("s3:ListBucket",),
        "moto",
        "the same for the moderation model",
    ),
    Check(
        "api gateway timeout",
        check_api_timeout,
        ("service-quotas:ListServiceQuotas", "service-quotas:ListAWSDefaultServiceQuotas"),
        ("servicequotas:ListServiceQuotas", "servicequotas:ListAWSDefaultServiceQuotas"),
        "Stubber",
        "'Maximum integration timeout in milliseconds' covers the buffered routes; the "
        "streaming route stays within the 15-minute STREAM maximum",
    ),
    Check(
        "lambda concurrency",
        check_lambda_concurrency,
        ("lambda:GetAccountSettings",),
        ("lambda:GetAccountSettings",),
        "Stubber",
        "unreserved concurrency minus front_door.reserved_concurrency stays >= 100",
    ),
    Check(
        "base image",
        check_base_image,
        ("ecr:GetAuthorizationToken", "ecr:BatchGetImage"),
        ("ecr:GetAuthorizationToken", "ecr:BatchGetImage"),
        "moto",
        "the DLC base image can be pulled (ECR) with these credentials, else a note",
    ),
    Check(
        "idle cost",
        check_idle_cost,
        (),
        (),
        "none",
        "warns when the environment can never scale to zero, with its idle cost per day",
    ),
)


def run_checks(ctx: AccountContext, checks: Sequence[Check] = CHECKS) -> Iterator[CheckResult]:
    """Run ``checks`` in order; any AWS error becomes a ``FAIL`` line, never a traceback.

    The credentials check comes first; when it fails, the others are reported as not run.

    Parameters
    ----------
    ctx:
        The environment and clients.
    checks:
        What to run.

    Yields
    ------
    CheckResult
        One or more results per check.
    """
    if ctx.region is None:
        ctx.region = ctx.config.region or ctx.session.region_name
    for index, check in enumerate(checks):
        if ctx.region is None and check.name != "credentials":
            yield fail(
                "target",
                f"{ctx.config.name} has no region in cdk.json and no default region is set: "
                "export AWS_REGION=<region> (or set one in the profile)",
            )
            return
        try:
            results = check.run(ctx)
        except Exception as error:  # noqa: BLE001 - every failure must print as a FAIL line
            yield fail(check.name, _fix_for_error(check, error))
            if check.name == "credentials":
                rest = len(checks) - index - 1
                if rest:
                    yield fail("preflight", f"{rest} further checks not run: credentials needed")
                return
        else:
            yield from results


def read_policy(checks: Sequence[Check] = CHECKS) -> dict[str, Any]:
    """The least IAM policy that lets every check run (read-only actions only).

    Returns
    -------
    dict[str, Any]
        An IAM policy document.
    """
    actions = sorted({p for check in checks for p in check.permissions})
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ChatbotPreflightReadOnly",
                "Effect": "Allow",
                "Action": actions,
                "Resource": "*",
            }
        ],
    }
