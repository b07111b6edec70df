"""SageMaker runtime client: JSON calls and streamed JSON lines reassembled across PayloadParts."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError

from chatbot_contracts.container import JSONLINES, ChatRequest, StreamEvent, parse_stream_line
from front_door.errors import (
    FrontDoorError,
    InvalidRequestError,
    ModelWakingUpError,
    RequestTooLargeError,
    StreamInterruptedError,
    UpstreamModelError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from front_door.settings import Settings

if TYPE_CHECKING:
    from botocore.client import BaseClient

_THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_UNAVAILABLE_CODES = frozenset(
    {
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalDependencyException",
        "InternalFailure",
        "ModelNotReadyException",
    }
)


# SageMaker answers an invocation of an inference component with no copy (scaled to zero, or
# still scaling out) with a 400 ValidationError: "Inference Component has no capacity to
# process this request. ApplicationAutoScaling may be in-progress ...". The failure is what
# NoCapacityInvocationFailures counts, and that metric's alarm starts the wake-up.
_NO_CAPACITY_CODE = "ValidationError"
_NO_CAPACITY_PHRASE = "no capacity"
DEFAULT_WAKE_RETRY_AFTER_S = 300


def is_no_capacity_error(error: Mapping[str, Any]) -> bool:
    """Whether a runtime error response says the inference component has no copy.

    Parameters
    ----------
    error
        The ``Error`` member of a botocore ``ClientError`` response.

    Returns
    -------
    bool
        True for SageMaker's no-capacity ``ValidationError``.
    """
    message = str(error.get("Message", "")).lower()
    return error.get("Code") == _NO_CAPACITY_CODE and _NO_CAPACITY_PHRASE in message


class JsonLinesDecoder:
    """Reassembles the container's stream events from byte chunks split anywhere.

    Lines are cut on the ``\\n`` byte before decoding, and that byte never occurs inside a
    multi-byte UTF-8 sequence, so a character split across two chunks is decoded whole.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add a chunk and return the events of every line it completed.

        Parameters
        ----------
        data
            The next bytes of the stream, e.g. one ``PayloadPart``.

        Returns
        -------
        list of StreamEvent
            Validated events, in stream order (possibly empty).
        """
        self._buffer += data
        objects: list[StreamEvent] = []
        start = 0
        while (end := self._buffer.find(b"\n", max(start, self._scanned))) >= 0:
            objects.extend(_parse_line(self._buffer[start:end]))
            start = end + 1
            self._scanned = start
        if start:
            del self._buffer[:start]
        self._scanned = len(self._buffer)
        return objects

    def close(self) -> list[StreamEvent]:
        """Flush a final line that had no trailing newline.

        Returns
        -------
        list of StreamEvent
            The last event, if any bytes were pending.
        """
        rest, self._buffer, self._scanned = bytes(self._buffer), bytearray(), 0
        return _parse_line(rest)


def _parse_line(line: bytes | bytearray) -> list[StreamEvent]:
    if not line.strip():
        return []
    try:
        return [parse_stream_line(bytes(line))]
    except ValidationError as exc:
        raise StreamInterruptedError("The model stream sent a malformed line.") from exc


def iterate_stream_objects(events: Iterable[dict[str, Any]]) -> Iterator[StreamEvent]:
    """Turn parsed ``InvokeEndpointWithResponseStream`` events into container stream events.

    Parameters
    ----------
    events
        botocore's ``EventStream`` (or any iterable of its parsed events).

    Yields
    ------
    StreamEvent
        Each container protocol event (token, final object or error line).

    Raises
    ------
    StreamInterruptedError
        On ``ModelStreamError``/``InternalStreamFailure`` events, malformed lines or a broken
        connection.
    """
    from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

    decoder = JsonLinesDecoder()
    try:
        for event in events:
            if "PayloadPart" in event:
                yield from decoder.feed(event["PayloadPart"].get("Bytes", b""))
            elif "ModelStreamError" in event or "InternalStreamFailure" in event:
                kind = next(iter(event))
                raise StreamInterruptedError(f"The model stream failed ({kind}).")
        yield from decoder.close()
    except ClientError as exc:  # EventStreamError: a modeled error event inside the stream
        code = exc.response.get("Error", {}).get("Code", "stream error")
        raise StreamInterruptedError(f"The model stream failed ({code}).") from exc
    except ReadTimeoutError as exc:
        raise StreamInterruptedError("The model stream stalled past the read timeout.") from exc
    except (BotoCoreError, OSError) as exc:
        raise StreamInterruptedError("The connection to the model stream broke.") from exc


def _model_error(response: dict[str, Any]) -> FrontDoorError:
    """A container 4xx wrapped in ``ModelError`` is the caller's fault; anything else is ours."""
    original = int(response.get("OriginalStatusCode") or 0)
    if original not in (400, 413, 422):
        return UpstreamModelError("The model failed to process the request.")
    message = "The model rejected the request."
    try:
        detail = json.loads(str(response.get("OriginalMessage") or ""))
        message = str(detail["error"]["message"]) or message
    except (ValueError, KeyError, TypeError):
        pass
    if original == 413:
        return RequestTooLargeError(message, param="messages")
    return InvalidRequestError(message)


def map_client_error(
    exc: Exception, *, wake_retry_after_s: int = DEFAULT_WAKE_RETRY_AFTER_S
) -> FrontDoorError:
    """Map a botocore error raised before the first byte onto a typed front-door error.

    Parameters
    ----------
    exc
        A ``ClientError`` or ``BotoCoreError`` from the initial call (after botocore's
        retries).
    wake_retry_after_s
        ``Retry-After`` of the 503 for an inference component that has no copy.

    Returns
    -------
    FrontDoorError
        429 for throttling, 502 for model errors (400/413 when the container refused the
        request as invalid or too long), 503 when unavailable (``model_waking_up`` while a
        component scales out from zero), 504 on timeouts.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in _THROTTLING_CODES or (status == 429 and code != "ModelNotReadyException"):
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            retry_after = str(headers.get("retry-after", "1"))
            seconds = int(retry_after) if retry_after.isdigit() else 1
            return UpstreamThrottledError(
                "The model endpoint is throttling requests.", retry_after_s=seconds
            )
        if is_no_capacity_error(exc.response.get("Error", {})):
            return ModelWakingUpError(
                "The model is waking up; retry in a few minutes.",
                retry_after_s=wake_retry_after_s,
            )
        if code == "ModelError":
            return _model_error(exc.response)
        if code in _UNAVAILABLE_CODES or status >= 500:
            return UpstreamUnavailableError("The model endpoint is unavailable.")
        return UpstreamModelError(f"The model endpoint rejected the request ({code or status}).")
    if isinstance(exc, ReadTimeoutError):
        return UpstreamTimeoutError("The model endpoint did not answer in time.")
    if isinstance(exc, ConnectTimeoutError | EndpointConnectionError | ConnectionClosedError):
        return UpstreamUnavailableError("The model endpoint cannot be reached.")
    return UpstreamModelError("The call to the model endpoint failed.")


def create_sagemaker_runtime_client(settings: Settings) -> BaseClient:
    """A thread-safe boto3 ``sagemaker-runtime`` client configured from the settings.

    Parameters
    ----------
    settings
        Endpoint URL override, timeouts, retry budget and pool size come from here.

    Returns
    -------
    botocore.client.BaseClient
        The client; adaptive retry mode retries throttling and transient errors of the initial
        call only, since an open response stream is never replayed by botocore.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "adaptive", "max_attempts": settings.endpoint_max_attempts},
        connect_timeout=settings.endpoint_connect_timeout_s,
        read_timeout=settings.endpoint_read_timeout_s,
        max_pool_connections=settings.max_pool_connections,
        tcp_keepalive=True,
    )
    return boto3.session.Session().client(
        "sagemaker-runtime",
        endpoint_url=settings.sagemaker_endpoint_url,
        region_name=settings.region,
        config=config,
    )


_END = object()


class EndpointClient:
    """Calls the SageMaker endpoints without blocking the event loop.

    Parameters
    ----------
    client
        A boto3 ``sagemaker-runtime`` client.
    max_concurrency
        Upper bound of blocking calls in flight in worker threads.
    components
        Inference component to name (``InferenceComponentName``) per endpoint; endpoints not
        listed host a single model.
    wake_retry_after_s
        ``Retry-After`` of the 503 ``model_waking_up`` while a component has no copy.
    max_streams
        Upper bound of response streams read at once (one pooled reader thread each).
    """

    def __init__(
        self,
        client: BaseClient,
        *,
        max_concurrency: int = 64,
        components: Mapping[str, str] | None = None,
        wake_retry_after_s: int = DEFAULT_WAKE_RETRY_AFTER_S,
        max_streams: int = 1024,
    ) -> None:
        self._client = client
        # A plain pool rather than anyio's worker threads: its idle threads wake at once, and
        # the calls made before a first token start in the order they were made.
        self._calls = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="call")
        self._components = dict(components or {})
        self._wake_retry_after_s = wake_retry_after_s
        # Reader threads are reused from stream to stream: starting a thread per stream put a
        # thread start (0.1-1.5 ms, more under load) on the way to every first token.
        self._readers = ThreadPoolExecutor(max_workers=max_streams, thread_name_prefix="stream")

    def _target(self, endpoint_name: str) -> dict[str, str]:
        component = self._components.get(endpoint_name)
        target = {"EndpointName": endpoint_name}
        if component is not None:
            target["InferenceComponentName"] = component
        return target

    def _map(self, exc: Exception) -> FrontDoorError:
        return map_client_error(exc, wake_retry_after_s=self._wake_retry_after_s)

    def invoke_json_blocking(self, endpoint_name: str, body: BaseModel) -> dict[str, Any]:
        """``InvokeEndpoint`` with a JSON body; returns the JSON answer.

        Parameters
        ----------
        endpoint_name
            SageMaker endpoint name.
        body
            The request model, sent as ``application/json``.

        Returns
        -------
        dict
            The decoded response body.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint(
                **self._target(endpoint_name),
                Body=body.model_dump_json(exclude_none=True).encode(),
                ContentType="application/json",
                Accept="application/json",
            )
            payload = response["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc) from exc
        try:
            value = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UpstreamModelError("The model endpoint sent malformed JSON.") from exc
        if not isinstance(value, dict):
            raise UpstreamModelError("The model endpoint sent an unexpected answer.")
        return value

    async def invoke_json(self, endpoint_name: str, body: BaseModel) -> dict[str, Any]:
        """Async ``InvokeEndpoint`` (runs the blocking call in a worker thread).

        Parameters
        ----------
        endpoint_name, body
            As for :meth:`invoke_json_blocking`.

        Returns
        -------
        dict
            The decoded response body.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._calls, self.invoke_json_blocking, endpoint_name, body
        )

    def _open_stream(self, endpoint_name: str, body: ChatRequest) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self._client.invoke_endpoint_with_response_stream(
                **self._target(endpoint_name),
                Body=body.model_dump_json(exclude_none=True).encode(),
                ContentType="application/json",
                Accept=JSONLINES,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._map(exc) from exc
        return response["Body"]

    async def open_stream(self, endpoint_name: str, body: ChatRequest) -> ContainerStream:
        """``InvokeEndpointWithResponseStream``; returns once the endpoint accepted the request.

        Errors of the initial call (after botocore's retries) raise the mapped
        :class:`FrontDoorError` here, before anything reaches the client.

        Parameters
        ----------
        endpoint_name, body
            Endpoint and container protocol request (with ``"stream": true``).

        Returns
        -------
        ContainerStream
            Async iterator of the container's JSON objects.
        """
        # The call is made on the thread that then reads the stream: the first event is read
        # as soon as the headers are in, with no second hand-over between threads.
        stream = ContainerStream()
        opened = stream.start(self._readers, lambda: self._open_stream(endpoint_name, body))
        try:
            await opened
        except BaseException:
            stream.stop()  # a cancelled caller: the stream is closed once it is open
            raise
        return stream

    def close(self) -> None:
        """Stop the worker threads once their calls and streams end (at shutdown)."""
        self._calls.shutdown(wait=False)
        self._readers.shutdown(wait=False)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class ContainerStream:
    """Async iterator over the container objects of a response stream.

    A reader thread makes the blocking call and then drains botocore's event stream into an
    asyncio queue, so many streams run concurrently and the event loop never blocks on a
    socket read. Failures after the first byte surface as :class:`StreamInterruptedError`
    from ``__anext__``.
    """

    def __init__(self) -> None:
        self._event_stream: Any = None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._stopped = threading.Event()
        self._finished = False

    def start(self, readers: Executor, open_call: Callable[[], Any]) -> asyncio.Future[None]:
        """Open and read the stream on a thread of ``readers``.

        Parameters
        ----------
        readers
            The reader-thread pool.
        open_call
            The blocking call that returns botocore's ``EventStream`` (or raises).

        Returns
        -------
        asyncio.Future
            Done once the endpoint accepted the request; holds the call's error otherwise.
        """
        opened: asyncio.Future[None] = self._loop.create_future()
        readers.submit(self._read, open_call, opened)
        return opened

    def stop(self) -> None:
        """Stop reading from any thread; the reader closes the stream."""
        self._finished = True
        self._stopped.set()
        if self._event_stream is not None:
            self._event_stream.close()

    def _read(self, open_call: Callable[[], Any], opened: asyncio.Future[None]) -> None:
        try:
            self._event_stream = open_call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which raises it
            self._call_soon(_settle, opened, exc)
            return
        if self._stopped.is_set():  # nobody waits for it any more
            self._event_stream.close()
            return
        self._call_soon(_settle, opened, None)
        self._pump()

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is gone; nobody is left to deliver to
            self._stopped.set()

    def _deliver(self, item: Any) -> None:
        self._call_soon(self._queue.put_nowait, item)

    def _pump(self) -> None:
        try:
            for item in iterate_stream_objects(self._event_stream):
                if self._stopped.is_set():
                    return
                self._deliver(item)
            self._deliver(_END)
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            if not self._stopped.is_set():
                self._deliver(exc)

    def __aiter__(self) -> ContainerStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, Exception):
            self._finished = True
            raise item
        event: StreamEvent = item
        return event

    async def aclose(self) -> None:
        """Stop reading and release the connection (e.g. after a moderation block)."""
        self._finished = True
        if not self._stopped.is_set():
            self._stopped.set()
            if self._event_stream is not None:
                await anyio.to_thread.run_sync(self._event_stream.close)
