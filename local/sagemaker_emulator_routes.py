"""Routes of the emulator: the two runtime invocation paths, and the control routes for tests."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, deque
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from local.sagemaker_emulator_eventstream import (
    EVENT_STREAM_CONTENT_TYPE,
    payload_part,
    split_parts,
    stream_exception,
)
from local.sagemaker_emulator_faults import (
    ACCOUNT_ID,
    Capacity,
    EndpointFaults,
    ServiceError,
    SleepRequest,
    model_error,
    model_timeout,
    no_capacity,
    pre_call_fault,
    take,
    validation_error,
)

if TYPE_CHECKING:
    from local.sagemaker_emulator import EmulatorSettings

__all__ = ["EmulatorState", "add_control_routes", "add_runtime_routes"]

# SageMaker's documented limits for one invocation.
MAX_REQUEST_BYTES = 6 * 1024 * 1024
_LAST_REQUESTS_KEPT = 50
COMPONENT_HEADER = "x-amzn-sagemaker-inference-component"
_COMPONENT_REQUIRED = (
    "Inference Component Name header is required for endpoints to which you plan to deploy "
    "inference components. Please include Inference Component Name header or consider using "
    "SageMaker models."
)


class EmulatorState:
    """What the emulator remembers: faults, capacity, counters and the last requests.

    Parameters
    ----------
    settings
        The emulator's settings.
    """

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.faults: dict[str, EndpointFaults] = {}
        self.capacity = Capacity(settings.wake_after_s, settings.asleep)
        self.invocations: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.last_requests: deque[dict[str, Any]] = deque(maxlen=_LAST_REQUESTS_KEPT)
        self.active_streams = 0
        self.max_active_streams = 0

    def faults_for(self, endpoint: str) -> EndpointFaults:
        """The (mutable) faults armed for ``endpoint``."""
        return self.faults.setdefault(endpoint, EndpointFaults())

    def stats(self) -> dict[str, Any]:
        """Counters for ``GET /_stats``."""
        return {
            "invocations": dict(self.invocations),
            "errors": dict(self.errors),
            "no_capacity_failures": dict(self.capacity.refused),
            "active_streams": self.active_streams,
            "max_active_streams": self.max_active_streams,
            "last_requests": list(self.last_requests),
        }


class _StreamCloser:
    """Ends one streaming invocation exactly once: counts it out and closes the upstream."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.upstream: aiohttp.ClientResponse | None = None
        self.closed = False
        state.active_streams += 1
        state.max_active_streams = max(state.max_active_streams, state.active_streams)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.state.active_streams -= 1
        if self.upstream is not None:
            if self.upstream.content.at_eof():
                self.upstream.release()  # read to its end: the connection is reused
            else:
                self.upstream.close()  # the container sees the disconnect


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


def _check_component(settings: EmulatorSettings, endpoint: str, component: str | None) -> None:
    hosted = {name for name, host in settings.components.items() if host == endpoint}
    if component is None:
        if hosted:
            raise validation_error(_COMPONENT_REQUIRED)
        return
    if component not in hosted:
        raise validation_error(
            f"Inference Component {component} not found on endpoint {endpoint} "
            f"of account {ACCOUNT_ID}."
        )


def add_runtime_routes(app: FastAPI, state: EmulatorState) -> None:
    """Add ``POST /endpoints/{name}/invocations[-response-stream]`` and the error handler.

    Parameters
    ----------
    app
        The emulator app; ``app.state.http`` holds the upstream client during its lifespan.
    state
        Its state.
    """
    settings = state.settings

    def upstream_url(endpoint: str) -> str:
        base = settings.endpoints.get(endpoint)
        if base is None:
            raise validation_error(f"Endpoint {endpoint} of account {ACCOUNT_ID} not found.")
        return base.rstrip("/") + "/invocations"

    async def prepare(
        request: Request, endpoint: str, operation: str
    ) -> tuple[str, bytes, dict[str, str], EndpointFaults]:
        url = upstream_url(endpoint)
        body = await request.body()
        if len(body) > MAX_REQUEST_BYTES:
            raise validation_error(
                f"Request payload size {len(body)} exceeds the limit of {MAX_REQUEST_BYTES} bytes."
            )
        component = request.headers.get(COMPONENT_HEADER)
        _check_component(settings, endpoint, component)
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
                "component": component,
                "operation": operation,
                "headers": headers,
                "body": body.decode("utf-8", errors="replace"),
            }
        )
        if not state.capacity.admit(component or endpoint):
            raise no_capacity()
        state.invocations[endpoint] += 1
        faults = state.faults_for(endpoint)
        error = pre_call_fault(faults)
        if error is None and take(faults, "model_error"):
            error = model_error(
                variant_name=settings.variant_name,
                region=settings.region,
                endpoint=endpoint,
                status=faults.model_error_status,
                body=faults.model_error_message,
            )
        if error is not None:
            raise error
        if faults.first_byte_delay_s:
            await asyncio.sleep(faults.first_byte_delay_s)
        return url, body, headers, faults

    def upstream_error(endpoint: str, status: int, body: str) -> ServiceError:
        return model_error(
            variant_name=settings.variant_name,
            region=settings.region,
            endpoint=endpoint,
            status=status,
            body=body,
        )

    def response_headers(upstream: Mapping[str, str], request_id: str) -> dict[str, str]:
        headers = {
            "x-Amzn-Invoked-Production-Variant": settings.variant_name,
            "x-amzn-RequestId": request_id,
        }
        attributes = upstream.get("x-amzn-sagemaker-custom-attributes")
        if attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = attributes
        return headers

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        state.errors[exc.code] += 1
        return exc.response(str(uuid.uuid4()))

    @app.post("/endpoints/{endpoint}/invocations")
    async def invoke_endpoint(endpoint: str, request: Request) -> Response:
        url, body, headers, _ = await prepare(request, endpoint, "invoke")
        client: aiohttp.ClientSession = app.state.http
        try:
            async with client.post(url, data=body, headers=headers) as upstream:
                status, content, upstream_headers = (
                    upstream.status,
                    await upstream.read(),
                    upstream.headers,
                )
        except TimeoutError as exc:  # aiohttp's timeouts are TimeoutErrors (checked first)
            raise model_timeout(settings.variant_name) from exc
        except aiohttp.ClientError as exc:
            raise ServiceError(
                "ServiceUnavailable", 503, {"Message": f"Model container unreachable: {exc!r}"}
            ) from exc
        if status >= 400:
            raise upstream_error(endpoint, status, content.decode("utf-8", errors="replace"))
        headers_out = response_headers(upstream_headers, str(uuid.uuid4()))
        return Response(
            content,
            media_type=upstream_headers.get("content-type", "application/octet-stream"),
            headers=headers_out,
        )

    @app.post("/endpoints/{endpoint}/invocations-response-stream")
    async def invoke_endpoint_with_response_stream(endpoint: str, request: Request) -> Response:
        url, body, headers, faults = await prepare(request, endpoint, "stream")
        client: aiohttp.ClientSession = app.state.http
        # No overall limit: a stream may run as long as the model keeps sending.
        timeout = aiohttp.ClientTimeout(
            total=None, connect=10.0, sock_read=settings.stream_read_timeout_s
        )
        closer = _StreamCloser(state)
        try:
            upstream = closer.upstream = await client.post(
                url, data=body, headers=headers, timeout=timeout
            )
            if upstream.status >= 400:
                text = (await upstream.read()).decode("utf-8", errors="replace")
                raise upstream_error(endpoint, upstream.status, text)
        except TimeoutError as exc:
            await closer.close()
            raise model_timeout(settings.variant_name) from exc
        except aiohttp.ClientError as exc:
            await closer.close()
            raise ServiceError(
                "ServiceUnavailable", 503, {"Message": f"Model container unreachable: {exc!r}"}
            ) from exc
        except BaseException:
            await closer.close()
            raise
        max_part = faults.max_part_bytes or settings.max_part_bytes
        seed = faults.split_seed if faults.split_seed is not None else settings.split_seed
        error_after = faults.stream_error_after_parts if take(faults, "stream_error") else None
        failure_after = (
            faults.stream_failure_after_parts if take(faults, "stream_failure") else None
        )
        error_event = stream_exception(
            "ModelStreamError",
            {"Message": faults.stream_error_message, "ErrorCode": faults.stream_error_code},
        )
        failure_event = stream_exception(
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
                async for chunk, _ in upstream.content.iter_chunks():  # as the container sent them
                    for part in split_parts(chunk, max_part, rng):
                        yield payload_part(part)
                        parts += 1
                        if parts in (error_after, failure_after):
                            yield injected(parts == error_after)
                            return
            except TimeoutError:
                state.errors["ModelStreamError"] += 1
                yield stream_exception(
                    "ModelStreamError",
                    {
                        "Message": "The model did not send data within the allowed time.",
                        "ErrorCode": "ModelInvocationTimeExceeded",
                    },
                )
            except aiohttp.ClientError as exc:
                state.errors["ModelStreamError"] += 1
                yield stream_exception(
                    "ModelStreamError",
                    {"Message": f"Model stream broken: {exc!r}", "ErrorCode": "StreamBroken"},
                )
            finally:
                await closer.close()

        headers_out = response_headers(upstream.headers, str(uuid.uuid4()))
        headers_out["X-Amzn-SageMaker-Content-Type"] = upstream.headers.get(
            "content-type", "application/octet-stream"
        )
        return _ClosingStreamingResponse(events(), headers_out, closer)


def add_control_routes(app: FastAPI, state: EmulatorState) -> None:
    """Add ``GET /ping`` and the test controls ``/_faults``, ``/_capacity``, ``/_stats``.

    Parameters
    ----------
    app
        The emulator app.
    state
        Its state.
    """
    settings = state.settings

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
            raise validation_error(f"Unknown endpoints: {', '.join(unknown)}")
        state.faults.update(faults)
        return {name: f.model_dump() for name, f in state.faults.items()}

    @app.delete("/_faults")
    async def clear_faults() -> Response:
        state.faults.clear()
        return Response(status_code=204)

    @app.get("/_capacity")
    async def get_capacity() -> dict[str, Any]:
        return state.capacity.snapshot()

    @app.put("/_capacity")
    async def put_capacity(targets: dict[str, SleepRequest]) -> dict[str, Any]:
        """Put endpoints or inference components to sleep, or wake them (keys: their names)."""
        known = set(settings.endpoints) | set(settings.components)
        unknown = sorted(set(targets) - known)
        if unknown:
            raise validation_error(f"Unknown endpoints or components: {', '.join(unknown)}")
        for name, request in targets.items():
            state.capacity.set(name, request)
        return state.capacity.snapshot()

    @app.delete("/_capacity")
    async def wake_everything() -> Response:
        state.capacity.clear()
        return Response(status_code=204)

    @app.get("/_stats")
    async def get_stats() -> dict[str, Any]:
        return state.stats()

    @app.delete("/_stats")
    async def reset_stats() -> Response:
        state.invocations.clear()
        state.errors.clear()
        state.last_requests.clear()
        state.capacity.refused.clear()
        state.max_active_streams = state.active_streams
        return Response(status_code=204)
