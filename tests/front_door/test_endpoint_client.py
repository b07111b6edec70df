"""Line reassembly over botocore's own event-stream parser, and the pre-stream error mapping."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Iterator
from typing import Any

import botocore.session
import pytest
from botocore.eventstream import EventStream
from botocore.exceptions import ClientError, ConnectTimeoutError, ReadTimeoutError
from botocore.parsers import EventStreamJSONParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatbot_contracts.container import StreamEvent, Token, TokenEvent
from front_door.endpoint_client import JsonLinesDecoder, iterate_stream_objects, map_client_error
from front_door.errors import (
    StreamInterruptedError,
    UpstreamModelError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)

DETAILS = {"finish_reason": "stop", "prompt_tokens": 3, "generated_tokens": 2}


def dumped(events: Iterable[StreamEvent]) -> list[dict[str, Any]]:
    """The events as the JSON objects they were sent as."""
    return [event.model_dump(exclude_unset=True) for event in events]


_OPERATION = "InvokeEndpointWithResponseStream"
_BODY_SHAPE = (
    botocore.session.get_session()
    .get_service_model("sagemaker-runtime")
    .operation_model(_OPERATION)
    .output_shape.members["Body"]
)


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One application/vnd.amazon.eventstream message (string headers only)."""
    encoded = b""
    for name, value in headers.items():
        encoded += struct.pack("!B", len(name)) + name.encode()
        encoded += struct.pack("!BH", 7, len(value.encode())) + value.encode()
    prelude = struct.pack("!II", 16 + len(encoded) + len(payload), len(encoded))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + encoded + payload
    return message + struct.pack("!I", zlib.crc32(message))


def payload_part(data: bytes) -> bytes:
    return frame(
        {
            ":message-type": "event",
            ":event-type": "PayloadPart",
            ":content-type": "application/octet-stream",
        },
        data,
    )


def stream_exception(kind: str, message: str) -> bytes:
    return frame(
        {
            ":message-type": "exception",
            ":exception-type": kind,
            ":content-type": "application/json",
        },
        json.dumps({"Message": message, "ErrorCode": "500"}).encode(),
    )


class RawStream:
    """What botocore's EventStream reads: the HTTP body as network chunks."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def stream(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        pass


def botocore_events(wire: bytes, network_cuts: list[int]) -> EventStream:
    cuts = sorted({c for c in network_cuts if 0 < c < len(wire)})
    chunks = [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]
    return EventStream(RawStream(chunks), _BODY_SHAPE, EventStreamJSONParser(), _OPERATION)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


TOKENS = st.lists(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=6),
    min_size=1,
    max_size=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tokens=TOKENS, part_cuts=st.lists(st.integers(0, 2000)), net_cuts=st.lists(st.integers(0, 4000))
)
def test_lines_split_anywhere_across_payload_parts_are_reassembled(tokens, part_cuts, net_cuts):
    objects: list[dict[str, Any]] = [{"token": {"text": t}} for t in tokens]
    objects.append({"generated_text": "".join(tokens), "details": DETAILS})
    body = b"".join(json.dumps(o, ensure_ascii=False).encode() + b"\n" for o in objects)
    wire = b"".join(payload_part(part) for part in split(body, part_cuts))
    assert dumped(iterate_stream_objects(botocore_events(wire, net_cuts))) == objects


def test_multibyte_character_split_between_parts_is_decoded_whole():
    line = json.dumps({"token": {"text": "naïve 数据 🚀"}}, ensure_ascii=False).encode() + b"\n"
    rocket = line.index("🚀".encode())
    parts = [line[: rocket + 1], line[rocket + 1 : rocket + 3], line[rocket + 3 :]]
    wire = b"".join(payload_part(p) for p in parts)
    assert dumped(iterate_stream_objects(botocore_events(wire, []))) == [
        {"token": {"text": "naïve 数据 🚀"}}
    ]


def test_final_line_without_newline_is_flushed():
    decoder = JsonLinesDecoder()
    final = json.dumps({"generated_text": "a", "details": DETAILS}).encode()
    assert dumped(decoder.feed(b'{"token": {"text": "a"}}\n' + final[:5])) == [
        {"token": {"text": "a"}}
    ]
    assert decoder.feed(final[5:]) == []
    assert dumped(decoder.close()) == [{"generated_text": "a", "details": DETAILS}]


@pytest.mark.parametrize("kind", ["ModelStreamError", "InternalStreamFailure"])
def test_stream_error_event_after_tokens_interrupts(kind):
    wire = payload_part(b'{"token": {"text": "Hel"}}\n') + stream_exception(kind, "boom")
    objects = iterate_stream_objects(botocore_events(wire, [5, 40]))
    assert next(objects) == TokenEvent(token=Token(text="Hel"))
    with pytest.raises(StreamInterruptedError, match=kind):
        next(objects)


@pytest.mark.parametrize(
    "garbage",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"token": "\xff\xfe"}\n',
        # Drift from the contract: a final object without details, a renamed field.
        b'{"generated_text": "a"}\n',
        b'{"token": {"txt": "a"}}\n',
    ],
)
def test_malformed_lines_interrupt_the_stream(garbage):
    with pytest.raises(StreamInterruptedError):
        list(iterate_stream_objects(botocore_events(payload_part(garbage), [])))


def client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
    }
    return ClientError(response, "InvokeEndpointWithResponseStream")


@pytest.mark.parametrize(
    ("error", "expected", "status"),
    [
        (client_error("ThrottlingException", 400), UpstreamThrottledError, 429),
        (client_error("TooManyRequests", 429), UpstreamThrottledError, 429),
        (client_error("ModelError", 424), UpstreamModelError, 502),
        (client_error("ValidationError", 400), UpstreamModelError, 502),
        (client_error("ServiceUnavailable", 503), UpstreamUnavailableError, 503),
        (client_error("ModelNotReadyException", 429), UpstreamUnavailableError, 503),
        (client_error("InternalFailure", 500), UpstreamUnavailableError, 503),
        (ReadTimeoutError(endpoint_url="http://x"), UpstreamTimeoutError, 504),
        (ConnectTimeoutError(endpoint_url="http://x"), UpstreamUnavailableError, 503),
    ],
)
def test_errors_before_the_first_byte_map_to_statuses(error, expected, status):
    mapped = map_client_error(error)
    assert isinstance(mapped, expected)
    assert mapped.status_code == status
    assert mapped.envelope()["error"]["type"]


@pytest.mark.parametrize(("original", "status"), [(400, 400), (422, 400), (413, 413), (500, 502)])
def test_model_error_keeps_the_containers_verdict_on_bad_requests(original, status):
    error = client_error("ModelError", 424)
    error.response["OriginalStatusCode"] = original
    error.response["OriginalMessage"] = json.dumps({"error": {"message": "prompt too long"}})
    mapped = map_client_error(error)
    assert mapped.status_code == status
    if status < 500:
        assert mapped.message == "prompt too long"


def test_throttling_carries_retry_after():
    mapped = map_client_error(client_error("ThrottlingException", 400, {"retry-after": "7"}))
    assert mapped.headers() == {"Retry-After": "7"}
