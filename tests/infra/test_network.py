"""Private networking, network isolation, the WAF and the no-drift guard, per environment."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from stacks.config import (
    ENVIRONMENTS_CONTEXT_KEY,
    FRONT_DOOR_MAX_REQUEST_CHARS,
    ConfigError,
    NetworkConfig,
    load_environment,
)
from stacks.constructs.private_network import PrivateNetwork
from stacks.isolation import refuse_network_dependencies
from tests.infra.conftest import ENVIRONMENTS, REPO_ROOT, Synthesized

NETWORKED = ("staging", "prod")
_PACKAGES = "arn:aws:sagemaker:us-east-1"


def _resources(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_name}


def _one(template: dict[str, Any], type_name: str) -> dict[str, Any]:
    [resource] = _resources(template, type_name).values()
    return dict(resource)


def test_network_follows_the_config(synthesized: Synthesized, cdk_json_context: Any) -> None:
    for env in ENVIRONMENTS:
        has_network = load_environment(cdk_json_context, env).network is not None
        assert has_network == (env in NETWORKED), env
        assert ("Network" in synthesized.templates[env]) == has_network, env


@pytest.mark.parametrize("env", NETWORKED)
def test_models_are_isolated_in_private_subnets_and_load_an_s3_prefix(
    synthesized: Synthesized, env: str
) -> None:
    models = _resources(synthesized.templates[env]["Inference"], "AWS::SageMaker::Model")
    assert len(models) == 2
    for model in models.values():
        properties = model["Properties"]
        assert properties["EnableNetworkIsolation"] is True
        vpc = properties["VpcConfig"]
        assert len(vpc["SecurityGroupIds"]) == 1
        assert len(vpc["Subnets"]) >= 2
        assert all("Fn::ImportValue" in subnet for subnet in vpc["Subnets"])
        source = properties["PrimaryContainer"]["ModelDataSource"]["S3DataSource"]
        assert (source["S3DataType"], source["CompressionType"]) == ("S3Prefix", "None")
        assert "ModelDataUrl" not in properties["PrimaryContainer"]
        environment = properties["PrimaryContainer"]["Environment"]
        assert environment["OPTION_MODEL_ID"] == "/opt/ml/model"
        assert environment["SERVING_PROPERTIES_PATH"].startswith("/opt/ml/model/serving/")


def test_dev_models_use_public_networking_with_the_same_data_source(
    synthesized: Synthesized,
) -> None:
    models = _resources(synthesized.templates["dev"]["Inference"], "AWS::SageMaker::Model")
    for model in models.values():
        assert model["Properties"]["EnableNetworkIsolation"] is False
        assert "VpcConfig" not in model["Properties"]
        assert "S3DataSource" in model["Properties"]["PrimaryContainer"]["ModelDataSource"]
    function = _one(synthesized.templates["dev"]["FrontDoor"], "AWS::Lambda::Function")
    assert "VpcConfig" not in function["Properties"]


@pytest.mark.parametrize("env", NETWORKED)
def test_artifacts_are_staged_under_the_weights_prefix_without_pruning(
    synthesized: Synthesized, env: str
) -> None:
    inference = synthesized.templates[env]["Inference"]
    deployments = _resources(inference, "Custom::CDKBucketDeployment")
    prefixes = sorted(d["Properties"]["DestinationBucketKeyPrefix"] for d in deployments.values())
    assert [p.split("/serving/")[0] for p in prefixes] == [
        "models/gpt-jt-moderation-6b",
        "models/gpt-neoxt-chat-base-20b",
    ]
    assert all(d["Properties"]["Prune"] is False for d in deployments.values())
    models = _resources(inference, "AWS::SageMaker::Model")
    for model in models.values():
        assert any(
            dep.startswith(("ChatArtifacts", "ModerationArtifacts")) for dep in model["DependsOn"]
        )
        path = model["Properties"]["PrimaryContainer"]["Environment"]["SERVING_PROPERTIES_PATH"]
        folder = path.removeprefix("/opt/ml/model/").removesuffix("serving.properties")
        assert any(p.endswith(folder) for p in prefixes), path


@pytest.mark.parametrize("env", NETWORKED)
def test_front_door_lambda_runs_in_the_vpc(synthesized: Synthesized, env: str) -> None:
    function = _one(synthesized.templates[env]["FrontDoor"], "AWS::Lambda::Function")
    vpc = function["Properties"]["VpcConfig"]
    assert len(vpc["SecurityGroupIds"]) == 1
    assert len(vpc["SubnetIds"]) >= 2


@pytest.mark.parametrize("env", NETWORKED)
def test_vpc_endpoints_flow_logs_and_no_internet_route(synthesized: Synthesized, env: str) -> None:
    network = synthesized.templates[env]["Network"]
    services = sorted(
        json.dumps(e["Properties"]["ServiceName"]).split(".")[-1].strip('"]}')
        for e in _resources(network, "AWS::EC2::VPCEndpoint").values()
    )
    assert services == sorted(
        ["runtime", "logs", "monitoring", "kms", "xray", "sts", "s3", "dynamodb"]
    )
    interface = [
        e["Properties"]
        for e in _resources(network, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(interface) == 6
    assert all(e["PrivateDnsEnabled"] is True for e in interface)
    flow_log = _one(network, "AWS::EC2::FlowLog")["Properties"]
    assert (flow_log["ResourceType"], flow_log["TrafficType"]) == ("VPC", "ALL")
    for absent in ("AWS::EC2::InternetGateway", "AWS::EC2::NatGateway", "AWS::EC2::EIP"):
        assert _resources(network, absent) == {}, absent


@pytest.mark.parametrize("env", NETWORKED)
def test_security_groups_allow_only_https_between_the_parts(
    synthesized: Synthesized, env: str
) -> None:
    network = synthesized.templates[env]["Network"]
    groups = _resources(network, "AWS::EC2::SecurityGroup")
    by_name = {k.split("SecurityGroup")[0].removeprefix("Network"): v for k, v in groups.items()}
    clients = {"Function", "EndpointHosts", "CustomizationJobs"}
    assert set(by_name) == clients | {"VpcEndpoints"}
    for name in clients:
        properties = by_name[name]["Properties"]
        assert "SecurityGroupIngress" not in properties
        assert [
            (r["IpProtocol"], r["FromPort"], r["ToPort"]) for r in properties["SecurityGroupEgress"]
        ] == [("tcp", 443, 443)]
    endpoints = by_name["VpcEndpoints"]["Properties"]
    assert "SecurityGroupIngress" not in endpoints  # only the rules below
    ingress = _resources(network, "AWS::EC2::SecurityGroupIngress")
    sources = sorted(
        r["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0].split("SecurityGroup")[0]
        for r in ingress.values()
    )
    assert sources == [f"Network{name}" for name in sorted(clients)]
    assert {(r["Properties"]["FromPort"], r["Properties"]["ToPort"]) for r in ingress.values()} == {
        (443, 443)
    }


def _job_states(synthesized: Synthesized, env: str) -> dict[str, dict[str, Any]]:
    machine = _one(synthesized.templates[env]["Customization"], "AWS::StepFunctions::StateMachine")
    # The definition with each imported value (subnet and group ids from the Network stack)
    # spelled "import:<export name>".
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    text = "".join(
        part
        if isinstance(part, str)
        else f"import:{part['Fn::ImportValue']}"
        if "Fn::ImportValue" in part
        else "<token>"
        for part in parts
    )
    states: dict[str, dict[str, Any]] = json.loads(text)["States"]
    return {name: states[name]["Parameters"] for name in ("ValidateData", "Train", "Evaluate")}


def _import_names(values: list[str]) -> list[str]:
    assert all(value.startswith("import:") for value in values), values
    return [value.removeprefix("import:") for value in values]


@pytest.mark.parametrize("env", NETWORKED)
def test_customization_jobs_run_isolated_in_the_private_subnets(
    synthesized: Synthesized, env: str
) -> None:
    network = synthesized.templates[env]["Network"]
    [subnet_count] = {len(_resources(network, "AWS::EC2::Subnet"))}
    jobs = _job_states(synthesized, env)
    training = jobs["Train"]
    configs = [
        (training["EnableNetworkIsolation"], training["VpcConfig"]),
        *(
            (
                jobs[name]["NetworkConfig"]["EnableNetworkIsolation"],
                jobs[name]["NetworkConfig"]["VpcConfig"],
            )
            for name in ("ValidateData", "Evaluate")
        ),
    ]
    for isolated, vpc in configs:
        assert isolated is True
        [group] = _import_names(vpc["SecurityGroupIds"])
        assert "CustomizationJobsSecurityGroup" in group
        subnets = _import_names(vpc["Subnets"])
        assert len(subnets) == subnet_count
        assert all("Subnet" in name for name in subnets)
    # SageMaker attaches the jobs with the jobs' role: it may manage their network interfaces.
    policies = _resources(synthesized.templates[env]["Customization"], "AWS::IAM::Policy")
    eni_roles = [
        policy["Properties"]["Roles"]
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "ec2:CreateNetworkInterfacePermission" in statement["Action"]
    ]
    assert len(eni_roles) == 1
    [[role]] = eni_roles
    assert "JobRole" in role["Ref"]


def test_dev_jobs_keep_sagemakers_networking(synthesized: Synthesized) -> None:
    for parameters in _job_states(synthesized, "dev").values():
        assert not {"VpcConfig", "NetworkConfig", "EnableNetworkIsolation"} & set(parameters)


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_waf_on_the_api_stage_where_configured(
    synthesized: Synthesized, cdk_json_context: Any, env: str
) -> None:
    waf = load_environment(cdk_json_context, env).front_door.waf
    front_door = synthesized.templates[env]["FrontDoor"]
    acls = _resources(front_door, "AWS::WAFv2::WebACL")
    if waf is None:
        assert acls == {}
        return
    [acl] = acls.values()
    rules = {rule["Name"]: rule for rule in acl["Properties"]["Rules"]}
    assert set(rules) == {"RatePerIp", "BodyTooLarge", "AwsCommonRules"}
    rate = rules["RatePerIp"]["Statement"]["RateBasedStatement"]
    assert (rate["Limit"], rate["AggregateKeyType"]) == (waf.rate_limit_per_5min, "IP")
    size = rules["BodyTooLarge"]["Statement"]["SizeConstraintStatement"]
    assert size["Size"] == waf.max_body_kb * 1024 >= FRONT_DOOR_MAX_REQUEST_CHARS
    assert size["FieldToMatch"] == {"Body": {"OversizeHandling": "MATCH"}}
    assert rules["BodyTooLarge"]["Action"] == {"Block": {}}
    limit = acl["Properties"]["AssociationConfig"]["RequestBody"]["API_GATEWAY"]
    assert limit == {"DefaultSizeInspectionLimit": f"KB_{waf.max_body_kb}"}
    common = rules["AwsCommonRules"]["Statement"]["ManagedRuleGroupStatement"]
    assert (common["VendorName"], common["Name"]) == ("AWS", "AWSManagedRulesCommonRuleSet")
    # The set's own 8 KB body rule would refuse requests the front door accepts: counted only.
    assert common["RuleActionOverrides"] == [
        {"Name": "SizeRestrictions_BODY", "ActionToUse": {"Count": {}}}
    ]
    association = _one(front_door, "AWS::WAFv2::WebACLAssociation")["Properties"]
    arn = json.dumps(association["ResourceArn"])
    assert "/restapis/" in arn
    assert "/stages/" in arn


def test_front_door_limit_matches_the_lambdas_setting() -> None:
    from front_door.settings import Settings

    assert Settings.model_fields["max_request_chars"].default == FRONT_DOOR_MAX_REQUEST_CHARS


def test_only_environments_without_waf_acknowledge_apig3(
    synthesized: Synthesized, cdk_json_context: Any
) -> None:
    for env in ENVIRONMENTS:
        waived = False
        for path in (synthesized.outdir / f"assembly-chatbot-{env}").glob("*.metadata.json"):
            waived |= "AwsSolutions-APIG3" in path.read_text()
        has_waf = load_environment(cdk_json_context, env).front_door.waf is not None
        assert waived is not has_waf, env


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_state_machine_can_update_an_endpoint(synthesized: Synthesized, env: str) -> None:
    # The guard of issue 11: endpoints change only through CloudFormation.
    for stack, template in synthesized.templates[env].items():
        for machine in _resources(template, "AWS::StepFunctions::StateMachine").values():
            definition = json.dumps(machine["Properties"]["DefinitionString"]).lower()
            assert "updateendpoint" not in definition, stack
        for policy in _resources(template, "AWS::IAM::Policy").values():
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions = statement["Action"]
                actions = [actions] if isinstance(actions, str) else actions
                lowered = {a.lower() for a in actions}
                assert not lowered & {"sagemaker:updateendpoint", "sagemaker:*", "*"}, stack


def _artifacts(tmp_path: Path, **options: str) -> Path:
    for role in ("chat", "moderation"):
        directory = tmp_path / "model_artifacts" / role
        directory.mkdir(parents=True)
        lines = [f"option.role={role}"] + [f"option.{k}={v}" for k, v in options.items()]
        (directory / "serving.properties").write_text("\n".join(lines) + "\n")
    return tmp_path / "model_artifacts"


def test_the_app_reads_serving_properties_as_the_container_does() -> None:
    from inference_server.settings import read_properties
    from stacks.isolation import artifact_options

    for role in ("chat", "moderation"):
        path = REPO_ROOT / "model_artifacts" / role / "serving.properties"
        assert artifact_options(path) == read_properties(path), role


def test_shipped_artifacts_need_no_network() -> None:
    refuse_network_dependencies("prod", REPO_ROOT / "model_artifacts", ("chat", "moderation"))


def test_retriever_that_needs_the_network_is_refused_naming_the_field(tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path, retriever="http", search_api_url="https://search.example")
    with pytest.raises(ConfigError, match=r"chat/serving.properties: option.retriever=http"):
        refuse_network_dependencies("prod", artifacts, ("chat", "moderation"))


def test_index_named_by_url_is_refused_but_model_id_is_the_apps(tmp_path: Path) -> None:
    artifacts = _artifacts(tmp_path, model_id="s3://b/w/", retrieval_index="s3://b/index/")
    with pytest.raises(ConfigError, match=r"option.retrieval_index=s3://b/index/"):
        refuse_network_dependencies("prod", artifacts, ("chat",))


def test_network_isolation_refusal_fails_the_stage(tmp_path: Path) -> None:
    from stacks.app import build_app
    from stacks.stage import SourcePaths

    sources = SourcePaths.from_repository(REPO_ROOT)
    artifacts = _artifacts(tmp_path, retriever="http", search_api_url="https://search.example")
    with pytest.raises(ConfigError, match=r"option\.retriever"):
        build_app(
            env_names=["prod"],
            outdir=str(tmp_path / "out"),
            sources=SourcePaths(
                container_dir=sources.container_dir,
                lambda_dir=sources.lambda_dir,
                artifacts_dir=artifacts,
            ),
        )


def _network(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "availability_zones": ["us-east-1a", "us-east-1b"],
        "flow_log_retention_days": 30,
    }
    raw.update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"availability_zones": ["us-east-1a"]}, "availability_zones"),
        ({"private_subnet_ids": ["subnet-0123456789abcdef0"] * 2}, "private_subnet_ids"),
        ({"cidr": "10.0.0.0/8"}, "cidr"),
        ({"cidr": "not-a-cidr"}, "cidr"),
        ({"flow_log_retention_days": 2}, "flow_log_retention_days"),
        (
            {"vpc_id": "vpc-0123456789abcdef0", "private_subnet_ids": ["subnet-0123456789abcdef0"]},
            "private_subnet_ids",
        ),
        (
            {
                "vpc_id": "vpc-0123456789abcdef0",
                "private_subnet_ids": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            },
            "private_route_table_ids",
        ),
    ],
)
def test_network_settings_are_validated_naming_the_field(
    cdk_json_context: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    context = copy.deepcopy(cdk_json_context)
    context[ENVIRONMENTS_CONTEXT_KEY]["prod"]["network"] = _network(**changes)
    with pytest.raises(ConfigError, match=rf"environment 'prod': network.*{field}"):
        load_environment(context, "prod")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_body_kb": 16}, r"front_door\.waf.*max_body_kb: 16 KB would block"),
        ({"rate_limit_per_5min": 10}, "front_door.waf.rate_limit_per_5min"),
    ],
)
def test_waf_settings_are_validated_naming_the_field(
    cdk_json_context: dict[str, Any], changes: dict[str, Any], message: str
) -> None:
    context = copy.deepcopy(cdk_json_context)
    context[ENVIRONMENTS_CONTEXT_KEY]["prod"]["front_door"]["waf"].update(changes)
    with pytest.raises(ConfigError, match=message):
        load_environment(context, "prod")


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            {"model_package_arn": f"{_PACKAGES}:111111111111:model-package/chatbot-prod-chat/3"},
            "weights_prefix: required with model_package_arn",
        ),
        ({"weights_prefix": "customization/runs/../../secrets/"}, "weights_prefix"),
        ({"weights_prefix": "elsewhere/x/"}, "weights_prefix"),
        (
            {
                "weights_prefix": "customization/runs/r1/training/j/output/model/",
                "model_package_arn": f"{_PACKAGES}:222222222222:model-package/chatbot-prod-chat/3",
            },
            "model_package_arn: account 222222222222",
        ),
    ],
)
def test_promotion_fields_are_validated(
    cdk_json_context: dict[str, Any], model: dict[str, Any], message: str
) -> None:
    context = copy.deepcopy(cdk_json_context)
    context[ENVIRONMENTS_CONTEXT_KEY]["prod"]["chat"]["model"].update(model)
    with pytest.raises(ConfigError, match=message):
        load_environment(context, "prod")


def test_imported_vpc_gets_endpoints_on_its_own_subnets_and_route_tables() -> None:
    settings = NetworkConfig.model_validate(
        _network(
            vpc_id="vpc-0123456789abcdef0",
            private_subnet_ids=["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
            private_route_table_ids=["rtb-0123456789abcdef0", "rtb-0123456789abcdef1"],
        )
    )
    stack = Stack(App(), "Imported")
    PrivateNetwork(stack, "Network", env_name="test", settings=settings)
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 8)
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "VpcId": "vpc-0123456789abcdef0",
            "RouteTableIds": ["rtb-0123456789abcdef0", "rtb-0123456789abcdef1"],
        },
    )
    template.has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Interface",
            "SubnetIds": ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"],
        },
    )
    template.has_resource_properties(
        "AWS::EC2::FlowLog", {"ResourceId": "vpc-0123456789abcdef0", "TrafficType": "ALL"}
    )
