"""Local SageMaker runtime: the real REST paths and event-stream framing, forwarding to containers.

Event-stream encoding is our own (``encode_event``, about 30 lines over ``zlib.crc32``) because no
well-kept library that fits exposes an encoder: botocore ships only the decoder, ``awscrt`` keeps
its encoder behind the event-stream RPC client, and AWS's ``smithy-aws-event-stream`` needs
Python 3.12. The tests decode everything we send with botocore's own parser.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import struct
import uuid
import zlib
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import Receive, Scope, Send

__all__ = [
    "EmulatorSettings",
    "EndpointFaults",
    "build_app",
    "encode_event",
    "main",
    "split_parts",
]

ACCOUNT_ID = "123456789012"
EVENT_STREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"
# SageMaker's documented limits for one invocation.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
_LAST_REQUESTS_KEPT = 50
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


def _payload_part(data: bytes) -> bytes:
    return _frame(_PAYLOAD_PART_HEADERS, data)


def _stream_exception(exception_type: str, body: dict[str, str]) -> bytes:
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


class EndpointFaults(BaseModel):
    """Faults and part splitting for one endpoint; counters apply to the next N invocations."""

    model_config = ConfigDict(extra="forbid")

    throttle: int = Field(default=0, ge=0, description="ThrottlingException (HTTP 400)")
    model_not_ready: int = Field(default=0, ge=0, description="ModelNotReadyException (429)")
    service_unavailable: int = Field(default=0, ge=0, description="ServiceUnavailable (503)")
    internal_failure: int = Field(default=0, ge=0, description="InternalFailure (500)")
    model_error: int = Field(default=0, ge=0, description="ModelError (424) without calling")
    model_error_status: int = Field(default=500, ge=400, le=599)
    model_error_message: str = "injected model failure"
    stream_error: int = Field(default=0, ge=0, description="ModelStreamError mid-stream")
    stream_error_after_parts: int = Field(default=0, ge=0)
    stream_error_code: str = "ModelInvocationTimeExceeded"
    stream_error_message: str = "injected model stream error"
    stream_failure: int = Field(default=0, ge=0, description="InternalStreamFailure mid-stream")
    stream_failure_after_parts: int = Field(default=0, ge=0)
    first_byte_delay_s: float = Field(default=0.0, ge=0, description="every call, while set")
    max_part_bytes: int | None = Field(default=None, ge=1, description="overrides the setting")
    split_seed: int | None = Field(default=None, description="overrides the setting")


class EmulatorSettings(BaseSettings):
    """Emulator settings (environment prefix ``SAGEMAKER_EMULATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="SAGEMAKER_EMULATOR_", frozen=True)

    endpoints: dict[str, str] = Field(description="endpoint name -> container base URL")
    variant_name: str = "AllTraffic"
    region: str = "us-east-1"
    max_part_bytes: int | None = Field(default=None, ge=1)
    split_seed: int | None = None
    invoke_timeout_s: float = Field(
        default=60.0, gt=0, description="InvokeEndpoint: longest wait for the container to answer"
    )
    stream_read_timeout_s: float = Field(
        default=60.0, gt=0, description="streaming: longest wait for the next upstream byte"
    )


class _ServiceError(Exception):
    """An error SageMaker returns before any response byte, in its rest-json shape."""

    def __init__(self, code: str, status: int, body: dict[str, Any]) -> None:
        super().__init__(code)
        self.code, self.status, self.body = code, status, body

    def response(self, request_id: str) -> JSONResponse:
        return JSONResponse(
            self.body,
            status_code=self.status,
            headers={"x-amzn-ErrorType": self.code, "x-amzn-RequestId": request_id},
        )


def _validation_error(message: str) -> _ServiceError:
    return _ServiceError("ValidationError", 400, {"Message": message})


class _State:
    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.faults: dict[str, EndpointFaults] = {}
        self.invocations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_requests: deque[dict[str, Any]] = deque(maxlen=_LAST_REQUESTS_KEPT)
        self.active_streams = 0
        self.max_active_streams = 0

    def faults_for(self, endpoint: str) -> EndpointFaults:
        return self.faults.setdefault(endpoint, EndpointFaults())

    def stats(self) -> dict[str, Any]:
        return {
            "invocations": dict(self.invocations),
            "errors": dict(self.errors),
            "active_streams": self.active_streams,
            "max_active_streams": self.max_active_streams,
            "last_requests": list(self.last_requests),
        }


def _take(faults: EndpointFaults, counter: str) -> bool:
    remaining: int = getattr(faults, counter)
    if remaining <= 0:
        return False
    setattr(faults, counter, remaining - 1)
    return True


def _pre_call_fault(faults: EndpointFaults) -> _ServiceError | None:
    if _take(faults, "throttle"):
        # SageMaker really answers throttling with HTTP 400 and a null message.
        return _ServiceError("ThrottlingException", 400, {"message": None})
    if _take(faults, "model_not_ready"):
        return _ServiceError(
            "ModelNotReadyException", 429, {"Message": "Model is not ready to serve requests"}
        )
    if _take(faults, "service_unavailable"):
        return _ServiceError(
            "ServiceUnavailable", 503, {"Message": "Service is temporarily unavailable"}
        )
    if _take(faults, "internal_failure"):
        return _ServiceError("InternalFailure", 500, {"Message": "Internal failure"})
    return None


def _model_timeout(settings: EmulatorSettings) -> _ServiceError:
    message = (
        "Your invocation timed out while waiting for a response from container "
        f"{settings.variant_name}. Review the latency metrics for each container in Amazon "
        "CloudWatch, resolve the issue, and try again."
    )
    return _ServiceError("ModelError", 424, {"Message": message})


def _model_error(
    settings: EmulatorSettings, endpoint: str, status: int, body: str
) -> _ServiceError:
    kind = "client" if status < 500 else "server"
    log_group = f"/aws/sagemaker/Endpoints/{endpoint}"
    message = (
        f"Received {kind} error ({status}) from {settings.variant_name} with message "
        f'"{body}". See https://{settings.region}.console.aws.amazon.com/cloudwatch/home'
        f"?region={settings.region}#logEventViewer:group={log_group} in account {ACCOUNT_ID} "
        "for more information."
    )
    return _ServiceError(
        "ModelError",
        424,
        {
            "Message": message,
            "OriginalStatusCode": status,
            "OriginalMessage": body,
            "LogStreamArn": (f"arn:aws:logs:{settings.region}:{ACCOUNT_ID}:log-group:{log_group}"),
        },
    )


class _StreamCloser:
    """Ends one streaming invocation exactly once: counts it out and closes the upstream."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.upstream: httpx.Response | None = None
        self.closed = False
        state.active_streams += 1
        state.max_active_streams = max(state.max_active_streams, state.active_streams)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.active_streams -= 1
        if self.upstream is not None:
            await self.upstream.aclose()


class _ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always closes its stream, so upstream sees a disconnect."""

    def __init__(
        self, events: AsyncGenerator[bytes], headers: dict[str, str], closer: _StreamCloser
    ) -> None:
        super().__init__(events, media_type=EVENT_STREAM_CONTENT_TYPE, headers=headers)
        self._events = events
        self._closer = closer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A generator that never started skips its own `finally`, hence the closer.
            await self._events.aclose()
            await self._closer.close()


def build_app(settings: EmulatorSettings) -> FastAPI:
    """Build the SageMaker runtime emulator.

    Parameters
    ----------
    settings
        Endpoint names and their container URLs, part splitting and timeouts.

    Returns
    -------
    FastAPI
        The app: ``POST /endpoints/{name}/invocations``,
        ``POST /endpoints/{name}/invocations-response-stream``, ``GET /ping``, and for tests
        ``GET|PUT|DELETE /_faults``, ``GET|DELETE /_stats``.
    """
    state = _State(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits, timeout=settings.invoke_timeout_s) as client:
            app.state.http = client
            yield

    app = FastAPI(
        title="SageMaker runtime emulator", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.emulator = state

    def upstream_url(endpoint: str) -> str:
        base = settings.endpoints.get(endpoint)
        if base is None:
            raise _validation_error(f"Endpoint {endpoint} of account {ACCOUNT_ID} not found.")
        return base.rstrip("/") + "/invocations"

    async def prepare(
        request: Request, endpoint: str, operation: str
    ) -> tuple[str, bytes, dict[str, str], EndpointFaults]:
        url = upstream_url(endpoint)
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            raise _validation_error(
                f"Request payload size {len(body)} exceeds the limit of {MAX_REQUEST_BYTES} bytes."
            )
        state.invocations[endpoint] += 1
        headers = {"Content-Type": request.headers.get("content-type", "application/octet-stream")}
        accept = request.headers.get(
            "x-amzn-sagemaker-accept" if operation == "stream" else "accept"
        )
        if accept:
            headers["Accept"] = accept
        for name in ("X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Inference-Id"):
            if name.lower() in request.headers:
                headers[name] = request.headers[name.lower()]
        state.last_requests.append(
            {
                "endpoint": endpoint,
                "operation": operation,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
            }
        )
        faults = state.faults_for(endpoint)
        error = _pre_call_fault(faults)
        if error is None and _take(faults, "model_error"):
            error = _model_error(
                settings, endpoint, faults.model_error_status, faults.model_error_message
            )
        if error is not None:
            raise error
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        return url, body, headers, faults

    def response_headers(upstream: httpx.Response, request_id: str) -> dict[str, str]:
        headers = {
            "x-Amzn-Invoked-Production-Variant": settings.variant_name,
            "x-amzn-RequestId": request_id,
        }
        attributes = upstream.headers.get("x-amzn-sagemaker-custom-attributes")
        if attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        return headers

    @app.exception_handler(_ServiceError)
    async def _service_error(_: Request, exc: _ServiceError) -> JSONResponse:
        state.errors[exc.code] += 1
        return exc.response(str(uuid.uuid4()))

    @app.post("/endpoints/{endpoint}/invocations")
    async def invoke_endpoint(endpoint: str, request: Request) -> Response:
        url, body, headers, _ = await prepare(request, endpoint, "invoke")
        client: httpx.AsyncClient = app.state.http
        try:
            upstream = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise _model_timeout(settings) from exc
        except httpx.TransportError as exc:
            raise _ServiceError(
                "ServiceUnavailable", 503, {"Message": f"Model container unreachable: {exc!r}"}
            ) from exc
        if upstream.status_code >= 400:
            raise _model_error(settings, endpoint, upstream.status_code, upstream.text)
        headers_out = response_headers(upstream, str(uuid.uuid4()))
        return Response(
            upstream.content,
            media_type=upstream.headers.get("content-type", "application/octet-stream"),
            headers=headers_out,
        )

    @app.post("/endpoints/{endpoint}/invocations-response-stream")
    async def invoke_endpoint_with_response_stream(endpoint: str, request: Request) -> Response:
        url, body, headers, faults = await prepare(request, endpoint, "stream")
        client: httpx.AsyncClient = app.state.http
        # No overall limit: a stream may run as long as the model keeps sending.
        timeout = httpx.Timeout(None, connect=10.0, read=settings.stream_read_timeout_s)
        upstream_request = client.build_request(
            "POST", url, content=body, headers=headers, timeout=timeout
        )
        closer = _StreamCloser(state)
        try:
            upstream = closer.upstream = await client.send(upstream_request, stream=True)
            if upstream.status_code >= 400:
                text = (await upstream.aread()).decode("utf-8", errors="replace")
                raise _model_error(settings, endpoint, upstream.status_code, text)
        except httpx.TimeoutException as exc:
            await closer.close()
            raise _model_timeout(settings) from exc
        except httpx.TransportError as exc:
            await closer.close()
            raise _ServiceError(
                "ServiceUnavailable", 503, {"Message": f"Model container unreachable: {exc!r}"}
            ) from exc
        except BaseException:
            await closer.close()
            raise
        max_part = faults.max_part_bytes or settings.max_part_bytes
        seed = faults.split_seed if faults.split_seed is not None else settings.split_seed
        error_after = faults.stream_error_after_parts if _take(faults, "stream_error") else None
        failure_after = (
            faults.stream_failure_after_parts if _take(faults, "stream_failure") else None
        )
        error_event = _stream_exception(
            "ModelStreamError",
            {"Message": faults.stream_error_message, "ErrorCode": faults.stream_error_code},
        )
        failure_event = _stream_exception(
            "InternalStreamFailure", {"Message": "injected internal stream failure"}
        )

        def injected(model_stream_error: bool) -> bytes:
            state.errors["ModelStreamError" if model_stream_error else "InternalStreamFailure"] += 1
            return error_event if model_stream_error else failure_event

        async def events() -> AsyncGenerator[bytes]:
            # Reproducible split points for tests, not security.
            rng = random.Random(seed) if seed is not None else None  # noqa: S311
            parts = 0
            try:
                if error_after == 0 or failure_after == 0:
                    yield injected(error_after == 0)
                    return
                async for chunk in upstream.aiter_raw():
                    for part in split_parts(chunk, max_part, rng):
                        yield _payload_part(part)
                        parts += 1
                        if parts in (error_after, failure_after):
                            yield injected(parts == error_after)
                            return
            except httpx.TimeoutException:
                state.errors["ModelStreamError"] += 1
                yield _stream_exception(
                    "ModelStreamError",
                    {
                        "Message": "The model did not send data within the allowed time.",
                        "ErrorCode": "ModelInvocationTimeExceeded",
                    },
                )
            except httpx.TransportError as exc:
                state.errors["ModelStreamError"] += 1
                yield _stream_exception(
                    "ModelStreamError",
                    {"Message": f"Model stream broken: {exc!r}", "ErrorCode": "StreamBroken"},
                )
            finally:
                await closer.close()

        headers_out = response_headers(upstream, str(uuid.uuid4()))
        headers_out["X-Amzn-SageMaker-Content-Type"] = upstream.headers.get(
            "content-type", "application/octet-stream"
        )
        return _ClosingStreamingResponse(events(), headers_out, closer)

    @app.get("/ping")
    async def ping() -> dict[str, Any]:
        return {"status": "ok", "endpoints": settings.endpoints}

    @app.get("/_faults")
    async def get_faults() -> dict[str, Any]:
        return {name: faults.model_dump() for name, faults in state.faults.items()}

    @app.put("/_faults")
    async def put_faults(faults: dict[str, EndpointFaults]) -> dict[str, Any]:
        unknown = sorted(set(faults) - set(settings.endpoints))
        if unknown:
            raise _validation_error(f"Unknown endpoints: {', '.join(unknown)}")
        state.faults.update(faults)
        return {name: f.model_dump() for name, f in state.faults.items()}

    @app.delete("/_faults")
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @app.get("/_stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @app.delete("/_stats")
    async def reset_stats() -> Response:
        state.invocations.clear()
        state.errors.clear()
        state.last_requests.clear()
        state.max_active_streams = state.active_streams
        return Response(status_code=204)

    return app


def _endpoint_arg(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT, got {value!r}")
    return name, url


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator under uvicorn (``python -m local.sagemaker_emulator``)."""
    parser = argparse.ArgumentParser(prog="python -m local.sagemaker_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--endpoint",
        type=_endpoint_arg,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="an endpoint name and its container's base URL (repeatable)",
    )
    parser.add_argument("--max-part-bytes", type=int, help="split payload parts at most this big")
    parser.add_argument("--split-seed", type=int, help="split parts at random sizes (this seed)")
    parser.add_argument("--variant-name", default="AllTraffic")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"variant_name": args.variant_name}
    if args.endpoint:
        overrides["endpoints"] = dict(args.endpoint)
    if args.max_part_bytes is not None:
        overrides["max_part_bytes"] = args.max_part_bytes
    if args.split_seed is not None:
        overrides["split_seed"] = args.split_seed
    settings = EmulatorSettings(**overrides)
    uvicorn.run(
        build_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
