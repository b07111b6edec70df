"""The environment's alarm topic: KMS-encrypted SNS, TLS only, subscribers from cdk.json."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.config import NotificationsConfig
from stacks.constructs import pseudo

__all__ = ["AlarmTopic"]


class AlarmTopic(Construct):
    """One SNS topic that every alarm of an environment notifies, on ALARM and on OK.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name; the topic is ``chatbot-<env>-alarms``.
    notifications:
        Email addresses and HTTPS endpoints to subscribe.
    protect_data:
        Keep the key when the stack is deleted (the topic itself holds no data).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        env_name: str,
        notifications: NotificationsConfig,
        protect_data: bool,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description=f"Encrypts the chatbot-{env_name} alarm topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN if protect_data else RemovalPolicy.DESTROY,
        )
        # CloudWatch publishes to an encrypted topic only if the key lets it; the AWS managed
        # SNS key does not, hence a key of our own ("*" in a key policy is this key).
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=f"chatbot-{env_name}-alarms",
            display_name=f"chatbot-{env_name} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        # The topic policy replaces SNS's default one: CloudWatch needs its own grant.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": pseudo.account_id()}},
            )
        )
        for email in notifications.emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        for url in notifications.https_endpoints:
            self.topic.add_subscription(
                subscriptions.UrlSubscription(url, protocol=sns.SubscriptionProtocol.HTTPS)
            )
        self.action = cloudwatch_actions.SnsAction(self.topic)

    def notify(self, alarm: cloudwatch.AlarmBase) -> None:
        """Send ``alarm``'s ALARM and OK transitions to the topic.

        Parameters
        ----------
        alarm:
            A metric or composite alarm.
        """
        alarm.add_alarm_action(self.action)
        alarm.add_ok_action(self.action)
