"""L3 construct: the WAF web ACL on the front door's API stage."""

from __future__ import annotations

from typing import Any

from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_wafv2 as wafv2
from constructs import Construct

from stacks.config import WafConfig

__all__ = ["FrontDoorWaf"]

# The common rule set blocks bodies over 8 KB; the front door accepts more (BodyTooLarge
# enforces its limit), so that one rule only counts.
_COMMON_RULES_COUNTED = ("SizeRestrictions_BODY",)


def _visibility(metric_name: str) -> wafv2.CfnWebACL.VisibilityConfigProperty:
    return wafv2.CfnWebACL.VisibilityConfigProperty(
        cloud_watch_metrics_enabled=True, metric_name=metric_name, sampled_requests_enabled=True
    )


class FrontDoorWaf(Construct):
    """A regional web ACL on the API stage: per-IP rate, body size, AWS common rules.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name (names the ACL and its metrics).
    settings:
        Validated WAF settings.
    stage:
        The API stage the ACL protects.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        settings: WafConfig,
        stage: apigw.Stage,
    ) -> None:
        super().__init__(scope, construct_id)
        name = f"chatbot-{env_name}-api"
        body_limit = settings.max_body_kb * 1024
        rules: list[Any] = [
            wafv2.CfnWebACL.RuleProperty(
                name="RatePerIp",
                priority=0,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    rate_based_statement=wafv2.CfnWebACL.RateBasedStatementProperty(
                        limit=settings.rate_limit_per_5min,
                        aggregate_key_type="IP",
                        evaluation_window_sec=300,
                    )
                ),
                visibility_config=_visibility(f"{name}-rate-per-ip"),
            ),
            wafv2.CfnWebACL.RuleProperty(
                name="BodyTooLarge",
                priority=1,
                action=wafv2.CfnWebACL.RuleActionProperty(block={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    size_constraint_statement=wafv2.CfnWebACL.SizeConstraintStatementProperty(
                        # WAF inspects the first max_body_kb of a body (association config
                        # below); a longer body matches as oversize and is blocked.
                        field_to_match=wafv2.CfnWebACL.FieldToMatchProperty(
                            body=wafv2.CfnWebACL.BodyProperty(oversize_handling="MATCH")
                        ),
                        comparison_operator="GT",
                        size=body_limit,
                        text_transformations=[
                            wafv2.CfnWebACL.TextTransformationProperty(priority=0, type="NONE")
                        ],
                    )
                ),
                visibility_config=_visibility(f"{name}-body-too-large"),
            ),
            wafv2.CfnWebACL.RuleProperty(
                name="AwsCommonRules",
                priority=2,
                override_action=wafv2.CfnWebACL.OverrideActionProperty(none={}),
                statement=wafv2.CfnWebACL.StatementProperty(
                    managed_rule_group_statement=wafv2.CfnWebACL.ManagedRuleGroupStatementProperty(
                        vendor_name="AWS",
                        name="AWSManagedRulesCommonRuleSet",
                        rule_action_overrides=[
                            wafv2.CfnWebACL.RuleActionOverrideProperty(
                                name=rule,
                                action_to_use=wafv2.CfnWebACL.RuleActionProperty(count={}),
                            )
                            for rule in _COMMON_RULES_COUNTED
                        ],
                    )
                ),
                visibility_config=_visibility(f"{name}-aws-common"),
            ),
        ]
        self.web_acl = wafv2.CfnWebACL(
            self,
            "WebAcl",
            name=name,
            scope="REGIONAL",
            description=f"{name}: per-IP rate, body size, AWS common rules",
            default_action=wafv2.CfnWebACL.DefaultActionProperty(allow={}),
            visibility_config=_visibility(name),
            association_config=wafv2.CfnWebACL.AssociationConfigProperty(
                request_body={
                    "API_GATEWAY": wafv2.CfnWebACL.RequestBodyAssociatedResourceTypeConfigProperty(
                        default_size_inspection_limit=f"KB_{settings.max_body_kb}"
                    )
                }
            ),
            rules=rules,
        )
        self.association = wafv2.CfnWebACLAssociation(
            self, "Association", resource_arn=stage.stage_arn, web_acl_arn=self.web_acl.attr_arn
        )
