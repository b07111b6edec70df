"""Settings, principal resolution, moderation window logic, protocol mapping and packaging."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from front_door.errors import MissingPrincipalError
from front_door.moderation import MOST_CAUTIOUS_LABEL, Moderator, OutputWindow
from front_door.principal import REQUEST_CONTEXT_HEADER, request_id, resolve_principal
from front_door.protocol import ChatCompletionRequest
from front_door.settings import Settings

REPO = Path(__file__).resolve().parents[2]
REQUIRED = {
    "CHATBOT_CHAT_ENDPOINT": "chatbot-dev-chat",
    "CHATBOT_MODERATION_ENDPOINT": "chatbot-dev-moderation",
    "CHATBOT_SESSION_TABLE": "sessions",
}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CHATBOT_"):
            monkeypatch.delenv(name)
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_read_chatbot_environment(env):
    env.setenv("CHATBOT_BLOCKED_LABELS", '["needs caution", "needs intervention"]')
    env.setenv("CHATBOT_SESSION_TTL_DAYS", "3")
    env.setenv("CHATBOT_AUTH_MODE", "cognito")
    settings = Settings()
    assert settings.chat_endpoint == "chatbot-dev-chat"
    assert settings.blocked_labels == ("needs caution", "needs intervention")
    assert settings.session_ttl_days == 3
    assert settings.auth_mode == "cognito"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATBOT_SESSION_TABLE", None),
        ("CHATBOT_BLOCKED_LABELS", '["very bad"]'),
        ("CHATBOT_SESSION_TTL_DAYS", "0"),
        ("CHATBOT_AUTH_MODE", "cloud"),
    ],
)
def test_bad_settings_stop_start_up_naming_the_field(env, name, value):
    if value is None:
        env.delenv(name)
    else:
        env.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    field = name.removeprefix("CHATBOT_").lower()
    assert field in str(info.value)


def settings(**overrides: object) -> Settings:
    return Settings.model_validate(
        {"chat_endpoint": "c", "moderation_endpoint": "m", "session_table": "t", **overrides}
    )


def context(**ctx: object) -> dict[str, str]:
    return {REQUEST_CONTEXT_HEADER: json.dumps(ctx)}


def test_iam_principal_is_the_caller_arn():
    headers = context(requestId="req-1", identity={"userArn": "arn:aws:iam::1:user/alice"})
    assert resolve_principal(settings(), headers) == "iam:arn:aws:iam::1:user/alice"
    assert request_id(headers) == "req-1"


def test_cognito_principal_is_the_sub_claim():
    headers = context(authorizer={"claims": {"sub": "abc-123"}})
    assert resolve_principal(settings(auth_mode="cognito"), headers) == "cognito:abc-123"
    http_api = context(authorizer={"jwt": {"claims": {"sub": "xyz"}}})
    assert resolve_principal(settings(auth_mode="cognito"), http_api) == "cognito:xyz"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {REQUEST_CONTEXT_HEADER: "not json"},
        context(identity={"userArn": ""}),
        context(authorizer={"claims": {"sub": "abc"}}),  # Cognito context under IAM auth
    ],
)
def test_missing_principal_in_aws_mode_is_401(headers):
    with pytest.raises(MissingPrincipalError) as info:
        resolve_principal(settings(), headers)
    assert info.value.status_code == 401


def test_output_window_checks_every_n_tokens_or_at_sentence_end():
    window = OutputWindow(every_tokens=4, min_tokens=2, window_chars=10)
    assert [window.add(t) for t in ["a", "b", "c", "d"]] == [False, False, False, True]
    assert window.add("x.") is False  # a sentence end, but fewer than min_tokens since last check
    assert window.add(" Done.") is True
    assert window.text == "abcdx. Done."
    assert window.window() == "cdx. Done."


def test_unknown_or_missing_labels_are_treated_as_most_cautious():
    moderator = Moderator(invoker=None, endpoint_name="m", blocked_labels=("needs intervention",))  # type: ignore[arg-type]
    assert moderator.verdict("casual").blocked is False
    assert moderator.verdict("gibberish").label == MOST_CAUTIOUS_LABEL
    assert moderator.verdict(None).blocked is True


def test_container_request_maps_openai_fields():
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            ],
            "max_tokens": 64,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "<human>",
            "seed": 7,
            "retrieval": False,
        }
    )
    body = request.to_container_request(
        [{"role": "user", "content": "before"}], max_new_tokens=64, stream=True
    )
    assert body.model_dump(exclude_unset=True) == {
        "inputs": [
            {"role": "user", "content": "before"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
        "parameters": {
            "max_new_tokens": 64,
            "no_retrieval": True,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": ["<human>"],
            "seed": 7,
        },
        "stream": True,
    }


def test_lambda_requirements_match_the_component_pins():
    def pins(path: Path) -> list[str]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return sorted(line for line in lines if line and not line.startswith("#"))

    assert pins(REPO / "lambda/requirements.txt") == pins(REPO / "requirements/front_door.txt")


def test_dockerfile_runs_the_app_under_the_web_adapter():
    dockerfile = (REPO / "lambda/Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"aws-lambda-adapter:\$\{LWA_VERSION\}", dockerfile)
    assert re.search(r"ARG LWA_VERSION=\d+\.\d+\.\d+", dockerfile)
    assert "--platform=linux/arm64" in dockerfile
    assert "python:3.12" in dockerfile
    assert "AWS_LWA_INVOKE_MODE=response_stream" in dockerfile
    assert "AWS_LWA_PORT=8080" in dockerfile
    assert "AWS_LWA_READINESS_CHECK_PATH=/healthz" in dockerfile
    assert '"front_door.app:create_app", "--factory"' in dockerfile
