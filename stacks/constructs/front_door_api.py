"""Front door: the FastAPI Lambda (container image, Web Adapter) behind a streaming REST API."""

from __future__ import annotations

import json
from pathlib import Path

from aws_cdk import Acknowledgment, IgnoreMode, RemovalPolicy, Validations
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from chatbot_contracts import metrics
from chatbot_contracts import sessions as schema
from chatbot_contracts.options import FrontDoorSetting
from stacks.config import FrontDoorConfig
from stacks.constructs import durations
from stacks.constructs.build_context import repository_context_excludes
from stacks.constructs.front_door_waf import FrontDoorWaf
from stacks.constructs.hosted_model import HostedModel
from stacks.constructs.log_retention import retention_days
from stacks.constructs.private_network import PrivateNetwork
from stacks.constructs.session_table import SessionTable

__all__ = [
    "LAMBDA_TIMEOUT_MINUTES",
    "STREAM_INTEGRATION_TIMEOUT_MINUTES",
    "FrontDoorApi",
]

# Named so that they cannot drift between environments (minutes, not Durations: making a
# Duration is a jsii call, which module import must not make; see stacks.jsii_loads).
LAMBDA_TIMEOUT_MINUTES = 15
STREAM_INTEGRATION_TIMEOUT_MINUTES = 15
LAMBDA_LOGGING_FORMAT = lambda_.LoggingFormat.JSON
STAGE_NAME = "api"


_IAM_AUTH_REASON = (
    "Every method requires IAM (SigV4) authorization; callers are IAM principals, not Cognito "
    "users, in this environment."
)


class FrontDoorApi(Construct):
    """The front-door function and its REST API.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name, used in resource descriptions.
    settings:
        Validated front-door settings (auth mode, concurrency, throttling, moderation policy).
    code_dir:
        The ``lambda/`` directory; its Dockerfile is built (arm64) at deploy time.
    chat, moderation:
        The models the function may invoke (endpoints, or endpoints' inference components).
    sessions:
        The session table the function may use.
    wake_retry_after_s:
        ``Retry-After`` of the 503 ``model_waking_up`` answered while a component sleeps.
    network:
        Where given, the function runs in its private subnets.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        settings: FrontDoorConfig,
        code_dir: Path,
        chat: HostedModel,
        moderation: HostedModel,
        sessions: SessionTable,
        wake_retry_after_s: int,
        network: PrivateNetwork | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        # This stack is stateless: its logs go with it (sessions live in the stateful stack).
        removal_policy = RemovalPolicy.DESTROY
        self.log_group = logs.LogGroup(
            self,
            "FunctionLogs",
            retention=retention_days(settings.log_retention_days),
            removal_policy=removal_policy,
        )
        self.role = iam.Role(
            self,
            "FunctionRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Front-door function of chatbot-{env_name}",
        )
        # Explicit instead of AWSLambdaBasicExecutionRole: writes to its own log group only.
        self.log_group.grant_write(self.role)
        if network is not None:
            network.grant_eni_management(self.role, service="lambda")
        self.function = lambda_.DockerImageFunction(
            self,
            "Function",
            description=f"chatbot-{env_name} front door (FastAPI under the Lambda Web Adapter)",
            code=lambda_.DockerImageCode.from_image_asset(
                str(code_dir.parent),
                file=f"{code_dir.name}/Dockerfile",
                platform=ecr_assets.Platform.LINUX_ARM64,
                exclude=repository_context_excludes(code_dir.name),
                ignore_mode=IgnoreMode.DOCKER,
            ),
            architecture=lambda_.Architecture.ARM_64,
            timeout=durations.minutes(LAMBDA_TIMEOUT_MINUTES),
            memory_size=settings.memory_mb,
            reserved_concurrent_executions=settings.reserved_concurrency,
            role=self.role,
            log_group=self.log_group,
            logging_format=LAMBDA_LOGGING_FORMAT,
            tracing=lambda_.Tracing.ACTIVE,
            environment=self._environment(settings, chat, moderation, sessions, wake_retry_after_s),
            vpc=network.vpc if network is not None else None,
            vpc_subnets=network.subnet_selection if network is not None else None,
            security_groups=[network.function_security_group] if network is not None else None,
        )
        Validations.of(self.role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason="Active tracing: xray:PutTraceSegments and xray:PutTelemetryRecords have "
                "no resource-level permissions; every other statement of this role names its "
                "resources.",
            )
        )
        chat.grant_invoke(self.function)
        moderation.grant_invoke(self.function)
        sessions.grant_session_access(self.function)

        self.access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention_days(settings.log_retention_days),
            removal_policy=removal_policy,
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"chatbot-{env_name}",
            description=f"chatbot-{env_name}: OpenAI-compatible chat API with sessions",
            endpoint_types=[apigw.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=removal_policy,
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                throttling_rate_limit=settings.throttle_rate_limit,
                throttling_burst_limit=settings.throttle_burst_limit,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
            ),
        )
        self.user_pool: cognito.UserPool | None = None
        self.user_pool_client: cognito.UserPoolClient | None = None
        method_options = self._method_options(settings)
        self._add_routes(method_options)
        self.waf: FrontDoorWaf | None = None
        if settings.waf is not None:
            self.waf = FrontDoorWaf(
                self,
                "Waf",
                env_name=env_name,
                settings=settings.waf,
                stage=self.api.deployment_stage,
            )
        self._acknowledge_api(settings)

    @staticmethod
    def _environment(
        settings: FrontDoorConfig,
        chat: HostedModel,
        moderation: HostedModel,
        sessions: SessionTable,
        wake_retry_after_s: int,
    ) -> dict[str, str]:
        variables = {
            FrontDoorSetting.CHAT_ENDPOINT: chat.endpoint_name,
            FrontDoorSetting.MODERATION_ENDPOINT: moderation.endpoint_name,
            FrontDoorSetting.SESSION_TABLE: sessions.table.table_name,
            FrontDoorSetting.SESSION_OWNER_INDEX: schema.OWNER_INDEX_NAME,
            FrontDoorSetting.SESSION_TTL_DAYS: str(settings.session_ttl_days),
            FrontDoorSetting.BLOCKED_LABELS: json.dumps(list(settings.blocked_labels)),
            FrontDoorSetting.REFUSAL_TEXT: settings.refusal_text,
            FrontDoorSetting.OUTPUT_MODERATION_MODE: settings.output_moderation_mode,
            FrontDoorSetting.AUTH_MODE: settings.auth,
            # A client may ask for at most what the chat container accepts.
            FrontDoorSetting.MAX_TOKENS_LIMIT: str(chat.settings.model.max_new_tokens_cap),
        }
        # Inference components are named in each invocation; plain endpoints need nothing.
        components = {
            setting: model.component_name
            for setting, model in (
                (FrontDoorSetting.CHAT_COMPONENT, chat),
                (FrontDoorSetting.MODERATION_COMPONENT, moderation),
            )
            if model.component_name is not None
        }
        if components:
            variables.update(components)
            variables[FrontDoorSetting.WAKE_RETRY_AFTER_S] = str(wake_retry_after_s)
        return {
            **{setting.env: value for setting, value in variables.items()},
            "AWS_LWA_INVOKE_MODE": "response_stream",
            "AWS_LWA_PORT": "8080",
            "AWS_LWA_READINESS_CHECK_PATH": "/healthz",
            "POWERTOOLS_SERVICE_NAME": metrics.SERVICE_NAME,
            "POWERTOOLS_METRICS_NAMESPACE": metrics.METRICS_NAMESPACE,
        }

    def _method_options(self, settings: FrontDoorConfig) -> apigw.MethodOptions:
        if settings.auth == "iam":
            return apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM)
        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.user_pool_client = self.user_pool.add_client(
            "ApiClient",
            auth_flows=cognito.AuthFlow(user_srp=True),
            prevent_user_existence_errors=True,
        )
        authorizer = apigw.CognitoUserPoolsAuthorizer(
            self, "Authorizer", cognito_user_pools=[self.user_pool]
        )
        return apigw.MethodOptions(
            authorization_type=apigw.AuthorizationType.COGNITO, authorizer=authorizer
        )

    def _add_routes(self, options: apigw.MethodOptions) -> None:
        streaming = apigw.LambdaIntegration(
            self.function,
            response_transfer_mode=apigw.ResponseTransferMode.STREAM,
            timeout=durations.minutes(STREAM_INTEGRATION_TIMEOUT_MINUTES),
        )
        buffered = apigw.LambdaIntegration(self.function)
        validator = self.api.add_request_validator(
            "ValidateRequests", validate_request_body=True, validate_request_parameters=True
        )

        def route(
            resource: apigw.IResource,
            verb: str,
            integration: apigw.Integration,
            parameters: dict[str, bool] | None = None,
        ) -> apigw.Method:
            return resource.add_method(
                verb,
                integration,
                authorization_type=options.authorization_type,
                authorizer=options.authorizer,
                request_validator=validator,
                request_parameters=parameters,
            )

        v1 = self.api.root.add_resource("v1")
        completions = v1.add_resource("chat").add_resource("completions")
        sessions = v1.add_resource("sessions")
        session = sessions.add_resource("{id}")
        session_id = {"method.request.path.id": True}
        models = v1.add_resource("models")
        model_id = {"method.request.path.id": True}
        self.methods = [
            route(completions, "POST", streaming),
            route(models, "GET", buffered),
            route(models.add_resource("{id}"), "GET", buffered, model_id),
            route(sessions, "GET", buffered),
            route(session, "GET", buffered, session_id),
            route(session, "DELETE", buffered, session_id),
            route(self.api.root.add_resource("healthz"), "GET", buffered),
        ]

    def _acknowledge_api(self, settings: FrontDoorConfig) -> None:
        if settings.waf is None:
            Validations.of(self.api.deployment_stage).acknowledge(
                Acknowledgment(
                    id="AwsSolutions::AwsSolutions-APIG3",
                    reason="This environment has no web ACL (front_door.waf is absent in "
                    "cdk.json): every method requires IAM or Cognito authorization and the "
                    "stage throttles requests.",
                )
            )
        cloud_watch_role = self.api.node.find_child("CloudWatchRole")
        Validations.of(cloud_watch_role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                "AmazonAPIGatewayPushToCloudWatchLogs]",
                reason="The account-level API Gateway logging role needs exactly the logs "
                "actions of this AWS managed policy; only apigateway.amazonaws.com can "
                "assume it.",
            )
        )
        if settings.auth == "iam":
            for method in self.methods:
                Validations.of(method).acknowledge(
                    Acknowledgment(id="AwsSolutions::AwsSolutions-COG4", reason=_IAM_AUTH_REASON)
                )
