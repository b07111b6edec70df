"""Event-stream framing of the emulator: ``application/vnd.amazon.eventstream`` messages and parts.

Our own encoder (about 30 lines over ``zlib.crc32``) because no well-kept library that fits
exposes one: botocore ships only the decoder, ``awscrt`` keeps its encoder behind the
event-stream RPC client, and AWS's ``smithy-aws-event-stream`` needs Python 3.12. The tests
decode everything we send with botocore's own parser.
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Iterator

__all__ = [
    "EVENT_STREAM_CONTENT_TYPE",
    "encode_event",
    "payload_part",
    "split_parts",
    "stream_exception",
]

EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
_STRING_HEADER = 7


def _encode_headers(headers: dict[str, str]) -> bytes:
    out = bytearray()
    for name, value in headers.items():
        name_bytes, value_bytes = name.encode(), value.encode()
        out += struct.pack("!B", len(name_bytes)) + name_bytes
        out += struct.pack("!BH", _STRING_HEADER, len(value_bytes)) + value_bytes
    return bytes(out)


def _frame(encoded_headers: bytes, payload: bytes) -> bytes:
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack("!II", total, len(encoded_headers))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    crc = zlib.crc32(payload, zlib.crc32(encoded_headers, zlib.crc32(prelude)))
    return prelude + encoded_headers + payload + struct.pack("!I", crc)


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """Encode one ``application/vnd.amazon.eventstream`` message.

    Parameters
    ----------
    headers
        String-valued headers, e.g. ``{":message-type": "event", ":event-type": "PayloadPart"}``.
    payload
        The message body.

    Returns
    -------
    bytes
        Prelude (total length, headers length, prelude CRC32), headers, payload, message CRC32.
    """
    return _frame(_encode_headers(headers), payload)


_PAYLOAD_PART_HEADERS = _encode_headers(
    {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
)


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying ``data``.

    Parameters
    ----------
    data
        The part's bytes.

    Returns
    -------
    bytes
        The encoded event.
    """
    return _frame(_PAYLOAD_PART_HEADERS, data)


def stream_exception(exception_type: str, body: dict[str, str]) -> bytes:
    """A modeled exception event (``ModelStreamError``, ``InternalStreamFailure``).

    Parameters
    ----------
    exception_type
        The exception's shape name.
    body
        Its JSON members (``Message``, ``ErrorCode``).

    Returns
    -------
    bytes
        The encoded event.
    """
    return encode_event(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        json.dumps(body).encode(),
    )


def split_parts(
    data: bytes, max_part_bytes: int | None, rng: random.Random | None
) -> Iterator[bytes]:
    """Cut one upstream chunk into the payloads of successive ``PayloadPart`` events.

    Parameters
    ----------
    data
        Bytes as they arrived from the container.
    max_part_bytes
        Largest part; ``None`` keeps the chunk whole unless ``rng`` is given.
    rng
        When given, each part gets a random size from 1 to ``max_part_bytes`` (or the rest of the
        chunk), so boundaries fall inside JSON objects and multi-byte UTF-8 characters.

    Yields
    ------
    bytes
        Non-empty parts whose concatenation is ``data``.
    """
    if max_part_bytes is None and rng is None:
        if data:
            yield data
        return
    start = 0
    while start < len(data):
        room = len(data) - start
        limit = min(room, max_part_bytes) if max_part_bytes is not None else room
        size = rng.randint(1, limit) if rng is not None else limit
        yield data[start : start + size]
        start += size
