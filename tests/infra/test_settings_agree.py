"""Every environment's synthesized model and front-door settings load and agree with each other.

The container and the front door validate their own settings at start-up, which in AWS is an
hour after `cdk deploy`; here each environment's synthesized ``OPTION_*`` and ``CHATBOT_*``
variables are loaded into those same settings classes, and the values that must match across
the seam (token cap, context window, endpoint names, labels, table and index names) are compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from chatbot_contracts import metrics
from chatbot_contracts import sessions as schema
from chatbot_contracts.moderation import MODERATION_LABELS
from chatbot_contracts.options import (
    FRONT_DOOR_PREFIX,
    PROPERTIES_PATH_ENV,
    FrontDoorSetting,
    ServingOption,
)
from front_door.settings import Settings as FrontDoorSettings
from inference_server.settings import ServingSettings, load_settings
from tests.infra.conftest import ENVIRONMENTS, REPO_ROOT, Synthesized

ARTIFACTS = REPO_ROOT / "model_artifacts"


def _resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r for r in template["Resources"].values() if r["Type"] == kind]


def _model_env(synthesized: Synthesized, env: str, role: str) -> dict[str, Any]:
    resources = synthesized.templates[env]["Inference"]["Resources"]
    (model,) = [
        r
        for logical_id, r in resources.items()
        if r["Type"] == "AWS::SageMaker::Model" and logical_id.startswith(role.capitalize())
    ]
    variables: dict[str, Any] = model["Properties"]["PrimaryContainer"]["Environment"]
    return variables


def _container_settings(
    variables: dict[str, Any], role: str, monkeypatch: pytest.MonkeyPatch
) -> ServingSettings:
    for name, value in variables.items():
        # Tokens (the S3 URI of the weights) are not known before deploy; any URI will do.
        monkeypatch.setenv(name, value if isinstance(value, str) else "s3://bucket/models/m/")
    return load_settings(ARTIFACTS / role / "serving.properties")


def _front_door(synthesized: Synthesized, env: str) -> dict[str, Any]:
    functions = _resources(synthesized.templates[env]["FrontDoor"], "AWS::Lambda::Function")
    (function,) = [f for f in functions if "CHATBOT_CHAT_ENDPOINT" in str(f)]
    variables: dict[str, Any] = function["Properties"]["Environment"]["Variables"]
    return variables


def _front_door_settings(variables: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name, value in variables.items():
        if name.startswith(FRONT_DOOR_PREFIX):
            monkeypatch.setenv(name, value if isinstance(value, str) else "resolved-at-deploy")
    return FrontDoorSettings()


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_container_and_front_door_settings_load_and_agree(
    synthesized: Synthesized, env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat_env = _model_env(synthesized, env, "chat")
    moderation_env = _model_env(synthesized, env, "moderation")
    lambda_env = _front_door(synthesized, env)
    with monkeypatch.context() as scoped:
        chat = _container_settings(chat_env, "chat", scoped)
    with monkeypatch.context() as scoped:
        moderation = _container_settings(moderation_env, "moderation", scoped)
    with monkeypatch.context() as scoped:
        front_door = _front_door_settings(lambda_env, scoped)

    assert (chat.role, moderation.role) == ("chat", "moderation")
    # Every per-environment option the app sets is one the container reads, and the launcher
    # finds serving.properties where the app staged it.
    assert set(chat_env) == {option.env for option in ServingOption} | {PROPERTIES_PATH_ENV}
    assert chat_env[PROPERTIES_PATH_ENV].startswith(chat_env[ServingOption.MODEL_ID.env] + "/")
    # What a client may ask for is what the chat container accepts, within its context window.
    assert front_door.max_tokens_limit == chat.max_new_tokens_cap
    assert front_door.max_tokens_default <= chat.max_new_tokens_cap < chat.max_model_len
    assert chat.default_max_new_tokens <= chat.max_new_tokens_cap
    assert set(front_door.blocked_labels) <= set(MODERATION_LABELS)
    assert front_door.session_owner_index == schema.OWNER_INDEX_NAME
    assert lambda_env["POWERTOOLS_METRICS_NAMESPACE"] == metrics.METRICS_NAMESPACE
    assert lambda_env["POWERTOOLS_SERVICE_NAME"] == metrics.SERVICE_NAME


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_front_door_names_the_deployed_endpoints_and_table(
    synthesized: Synthesized, env: str
) -> None:
    lambda_env = _front_door(synthesized, env)
    inference = synthesized.templates[env]["Inference"]
    endpoint_names = {
        r["Properties"]["EndpointName"] for r in _resources(inference, "AWS::SageMaker::Endpoint")
    }
    assert {
        lambda_env[FrontDoorSetting.CHAT_ENDPOINT.env],
        lambda_env[FrontDoorSetting.MODERATION_ENDPOINT.env],
    } == endpoint_names
    (table,) = _resources(synthesized.templates[env]["Stateful"], "AWS::DynamoDB::Table")
    keys = {k["AttributeName"]: k["KeyType"] for k in table["Properties"]["KeySchema"]}
    assert keys == {schema.PARTITION_KEY: "HASH", schema.SORT_KEY: "RANGE"}
    (index,) = table["Properties"]["GlobalSecondaryIndexes"]
    assert index["IndexName"] == lambda_env[FrontDoorSetting.SESSION_OWNER_INDEX.env]
    assert table["Properties"]["TimeToLiveSpecification"]["AttributeName"] == (schema.TTL_ATTRIBUTE)


def test_every_named_option_is_a_setting_of_its_side() -> None:
    assert {o.value for o in ServingOption} <= set(ServingSettings.model_fields)
    assert {s.value for s in FrontDoorSetting} <= set(FrontDoorSettings.model_fields)


def test_serving_properties_hold_no_per_environment_option() -> None:
    from inference_server.settings import read_properties

    per_environment = {option.value for option in ServingOption}
    for role in ("chat", "moderation"):
        shipped = read_properties(Path(ARTIFACTS / role / "serving.properties"))
        assert not per_environment & set(shipped), role
