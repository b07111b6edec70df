"""L3 construct: the private VPC of one environment, its VPC endpoints, flow logs and groups."""

from __future__ import annotations

from aws_cdk import Acknowledgment, RemovalPolicy, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.config import NetworkConfig
from stacks.constructs.log_retention import retention_days

__all__ = ["PrivateNetwork", "interface_endpoint_services"]

_HTTPS_PORT = 443


def interface_endpoint_services() -> dict[str, ec2.InterfaceVpcEndpointAwsService]:
    """The interface endpoints' services, by construct id prefix.

    What the front door and the endpoints' hosts call (besides S3 and DynamoDB, which have
    gateway endpoints): invoking the endpoints, logs and metrics, KMS for the bucket's key,
    traces, and STS for role credentials. A function: each service is a jsii call, which
    module import must not make (stacks.jsii_loads).
    """
    services = ec2.InterfaceVpcEndpointAwsService
    return {
        "SageMakerRuntime": services.SAGEMAKER_RUNTIME,
        "Logs": services.CLOUDWATCH_LOGS,
        "Monitoring": services.CLOUDWATCH_MONITORING,
        "Kms": services.KMS,
        "XRay": services.XRAY,
        "Sts": services.STS,
    }


_ENI_ACTIONS = {
    # What a VPC-attached Lambda function's role needs to manage its ENIs.
    "lambda": (
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    ),
    # What SageMaker needs, acting with an endpoint's execution role, to attach its hosts.
    "sagemaker": (
        "ec2:CreateNetworkInterface",
        "ec2:CreateNetworkInterfacePermission",
        "ec2:DeleteNetworkInterface",
        "ec2:DeleteNetworkInterfacePermission",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeVpcs",
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
    ),
}


class PrivateNetwork(Construct):
    """Private subnets with no route to the internet, reaching AWS through VPC endpoints.

    The VPC is created (isolated subnets only: no internet gateway, no NAT) or imported by id.
    Security groups say who talks to whom: the client groups (the front door's, the endpoints'
    hosts', and any :meth:`add_client` adds, e.g. the customization jobs') may open HTTPS
    connections (and nothing else) out of the VPC's subnets, where only the VPC endpoints and
    the S3/DynamoDB gateway routes lead; the interface endpoints accept HTTPS from those
    groups only. Flow logs record all traffic into CloudWatch Logs.

    Parameters
    ----------
    scope, construct_id:
        Construct scope and id.
    env_name:
        Environment name (names the VPC).
    settings:
        Validated network settings.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, env_name: str, settings: NetworkConfig
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc: ec2.IVpc
        if settings.vpc_id is not None:
            self.vpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=settings.vpc_id,
                availability_zones=list(settings.availability_zones),
                private_subnet_ids=list(settings.private_subnet_ids),
                private_subnet_route_table_ids=list(settings.private_route_table_ids) or None,
            )
            self.subnets = self.vpc.private_subnets
        else:
            self.vpc = ec2.Vpc(
                self,
                "Vpc",
                vpc_name=f"chatbot-{env_name}",
                ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
                # Explicit zones: synth needs no availability-zone lookup (no AWS call).
                availability_zones=list(settings.availability_zones),
                nat_gateways=0,
                subnet_configuration=[
                    ec2.SubnetConfiguration(
                        name="private", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=20
                    )
                ],
                enable_dns_hostnames=True,
                enable_dns_support=True,
            )
            self.subnets = self.vpc.isolated_subnets
        self.subnet_selection = ec2.SubnetSelection(subnets=self.subnets)

        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention_days(settings.flow_log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.flow_log = ec2.FlowLog(
            self,
            "FlowLog",
            resource_type=ec2.FlowLogResourceType.from_vpc(self.vpc),
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

        self.env_name = env_name
        self.vpc_endpoints_security_group = ec2.SecurityGroup(
            self,
            "VpcEndpointsSecurityGroup",
            vpc=self.vpc,
            description=f"chatbot-{env_name} VPC endpoints: HTTPS from the client groups",
            allow_all_outbound=False,
        )
        self.function_security_group = self.add_client("FunctionSecurityGroup", "front-door Lambda")
        self.endpoint_hosts_security_group = self.add_client(
            "EndpointHostsSecurityGroup", "SageMaker endpoints (network-isolated)"
        )

        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        self.gateway_endpoints: dict[str, ec2.GatewayVpcEndpoint] = {}
        if settings.create_vpc_endpoints:
            for name, service in interface_endpoint_services().items():
                self.interface_endpoints[name] = self.vpc.add_interface_endpoint(
                    f"{name}Endpoint",
                    service=service,
                    subnets=self.subnet_selection,
                    security_groups=[self.vpc_endpoints_security_group],
                    open=False,
                    private_dns_enabled=True,
                )
            for name, gateway in (
                ("S3", ec2.GatewayVpcEndpointAwsService.S3),
                ("DynamoDb", ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            ):
                self.gateway_endpoints[name] = self.vpc.add_gateway_endpoint(
                    f"{name}Endpoint", service=gateway, subnets=[self.subnet_selection]
                )

    def add_client(self, construct_id: str, who: str) -> ec2.SecurityGroup:
        """A security group whose members may open HTTPS connections, and only those, out.

        Out of the private subnets only the VPC endpoints (which accept HTTPS from every client
        group) and the S3/DynamoDB gateway routes lead.

        Parameters
        ----------
        construct_id:
            Id of the group, under this network.
        who:
            What runs in it, for the group's description, e.g. ``"front-door Lambda"``.

        Returns
        -------
        ec2.SecurityGroup
            The group.
        """
        group = ec2.SecurityGroup(
            self,
            construct_id,
            vpc=self.vpc,
            description=f"chatbot-{self.env_name} {who}: HTTPS out only",
            allow_all_outbound=False,
        )
        https = ec2.Port.tcp(_HTTPS_PORT)
        # Any address on 443: the subnets route nowhere but to the VPC endpoints and the
        # S3/DynamoDB gateways, whose prefix lists synth cannot look up without calling AWS.
        group.add_egress_rule(ec2.Peer.any_ipv4(), https, "HTTPS to VPC and gateway endpoints")
        self.vpc_endpoints_security_group.add_ingress_rule(
            group, https, f"HTTPS from {construct_id}"
        )
        return group

    def grant_eni_management(self, role: iam.IRole, *, service: str) -> None:
        """Let ``role`` manage the network interfaces that attach its service to the VPC.

        Parameters
        ----------
        role:
            A Lambda function's or a SageMaker endpoint's execution role.
        service:
            ``"lambda"`` or ``"sagemaker"``.
        """
        role.add_to_principal_policy(
            iam.PolicyStatement(actions=list(_ENI_ACTIONS[service]), resources=["*"])
        )
        Validations.of(role).acknowledge(
            Acknowledgment(
                id="AwsSolutions::AwsSolutions-IAM5[Resource::*]",
                reason=f"{service} attaches to the private subnets through ENIs it creates at "
                "run time: ec2:Describe* and ENI creation have no resource-level scope here; "
                "the security groups and isolated subnets confine the traffic.",
            )
        )
