"""The contracts package: each seam's model accepts what the sender sends and refuses drift."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chatbot_contracts import metrics, moderation, options, sessions
from chatbot_contracts.container import (
    ChatRequest,
    Details,
    ErrorEvent,
    FinalEvent,
    Token,
    TokenEvent,
    error_envelope,
    parse_stream_line,
)
from chatbot_contracts.front_door import OpenAIErrorEnvelope, openai_error_envelope
from inference_server.generation import token_line


@pytest.mark.parametrize("text", ["", " a", 'quote " and \\ slash', "naïve 数据 🚀", "\n\t"])
def test_the_containers_hand_built_token_line_is_the_models_serialization(text: str) -> None:
    line = token_line(text)
    assert line.endswith(b"\n")
    event = parse_stream_line(line[:-1])
    assert event == TokenEvent(token=Token(text=text))
    assert json.loads(line) == json.loads(event.model_dump_json())


def test_each_stream_line_parses_to_its_event_kind() -> None:
    final = {
        "generated_text": "A data engineer",
        "details": {"finish_reason": "stop", "prompt_tokens": 4, "generated_tokens": 3},
    }
    assert isinstance(parse_stream_line(json.dumps(final)), FinalEvent)
    error = error_envelope("backend_error", "boom", retry=False)
    parsed = parse_stream_line(json.dumps(error))
    assert isinstance(parsed, ErrorEvent)
    assert parsed.error.type == "backend_error"
    assert parsed.error.model_extra == {"retry": False}


@pytest.mark.parametrize(
    "line",
    [
        '{"token": {"text": 1}}',
        '{"token": {"text": "a", "logprob": -1}}',
        '{"generated_text": "a"}',
        '{"generated_text": "a", "details": {"finish_reason": "stop"}}',
        '{"error": {"message": "no type"}}',
        '{"tokens": []}',
        "[]",
    ],
)
def test_drift_from_the_stream_contract_is_refused(line: str) -> None:
    with pytest.raises(ValidationError):
        parse_stream_line(line)


def test_details_default_to_no_sources() -> None:
    details = Details(finish_reason="length", prompt_tokens=1, generated_tokens=2)
    assert details.sources == []
    assert details.retrieval_error is None


def test_chat_request_refuses_what_the_container_cannot_answer() -> None:
    with pytest.raises(ValidationError, match="last message"):
        ChatRequest.model_validate({"inputs": [{"role": "assistant", "content": "hi"}]})
    with pytest.raises(ValidationError, match="extra"):
        ChatRequest.model_validate({"inputs": "hi", "parameters": {"max_tokens": 5}})
    assert ChatRequest(inputs="hi").messages()[0].role == "user"


def test_labels_order_from_least_to_most_cautious() -> None:
    labels = moderation.MODERATION_LABELS
    assert len(labels) == len(set(labels)) == 5
    assert moderation.most_cautious(["casual", "needs caution", "possibly needs caution"]) == (
        "needs caution"
    )
    assert moderation.most_cautious([]) == "casual"
    assert set(moderation.DEFAULT_BLOCKED_LABELS) <= set(labels)


def test_message_sort_keys_sort_by_sequence_number() -> None:
    keys = [sessions.message_sort_key(n) for n in (0, 2, 10, 999_999)]
    assert keys == sorted(keys)
    assert keys[1] == "MSG#000002"
    assert sessions.session_partition_key("abc") == "SESSION#abc"
    assert not sessions.HEADER_SORT_KEY.startswith(sessions.MESSAGE_SORT_KEY_PREFIX)


def test_variable_names_carry_their_prefix() -> None:
    assert options.ServingOption.MAX_NEW_TOKENS_CAP.env == "OPTION_MAX_NEW_TOKENS_CAP"
    assert options.FrontDoorSetting.MAX_TOKENS_LIMIT.env == "CHATBOT_MAX_TOKENS_LIMIT"


def test_metric_units_and_dimensions() -> None:
    assert metrics.Metric.TIME_TO_FIRST_TOKEN.unit == "Milliseconds"
    assert {m.unit for m in metrics.Metric if m is not metrics.Metric.TIME_TO_FIRST_TOKEN} == {
        "Count"
    }
    assert metrics.dimensions() == {"service": metrics.SERVICE_NAME}


def test_openai_error_envelope_has_exactly_openais_fields() -> None:
    body = openai_error_envelope("Bad.", "invalid_request_error", "invalid_request", "messages")
    assert body == {
        "error": {
            "message": "Bad.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_request",
        }
    }
    assert OpenAIErrorEnvelope.model_validate(body).error.param == "messages"
