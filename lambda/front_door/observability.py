"""Powertools logging (request and session ids), per-request EMF metrics and X-Ray tracing."""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from chatbot_contracts.metrics import METRICS_NAMESPACE, SERVICE_NAME

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger, Tracer

# The Lambda Web Adapter runs the app as its own process: Lambda's per-invocation trace id
# reaches it as this request header, not as the _X_AMZN_TRACE_ID variable X-Ray's SDK reads.
TRACE_HEADER = b"x-amzn-trace-id"
TRACE_ID_VARIABLE = "_X_AMZN_TRACE_ID"


@cache
def get_logger() -> Logger:
    """The process's JSON logger (created on first use, keeping cold start light)."""
    from aws_lambda_powertools import Logger

    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME))


@cache
def get_tracer() -> Tracer:
    """The process's X-Ray tracer; boto3 calls (SageMaker, DynamoDB) become subsegments.

    ``POWERTOOLS_TRACE_DISABLED=true`` (locally, in tests) disables it: no daemon is needed
    and nothing is patched.
    """
    from aws_lambda_powertools import Tracer

    return Tracer(
        service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME),
        patch_modules=["botocore"],
    )


def tracing_enabled() -> bool:
    """Whether X-Ray tracing is on (off when ``POWERTOOLS_TRACE_DISABLED`` is true)."""
    return os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() != "true"


def install_tracing(app: Any) -> bool:
    """Trace ``app``'s AWS calls unless tracing is disabled.

    Parameters
    ----------
    app
        The FastAPI app; gains :class:`TraceHeaderMiddleware`.

    Returns
    -------
    bool
        Whether tracing was installed.
    """
    if not tracing_enabled():
        return False
    get_tracer()  # patches botocore once per process
    app.add_middleware(TraceHeaderMiddleware)
    return True


class TraceHeaderMiddleware:
    """ASGI middleware: hand each request's X-Ray trace header to the X-Ray SDK.

    Lambda runs one request at a time per execution environment, so the process-wide
    variable belongs to the request being served.

    Parameters
    ----------
    app
        The ASGI app to wrap.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Set ``_X_AMZN_TRACE_ID`` from the request's header, then serve it."""
        if scope["type"] == "http":
            for name, value in scope.get("headers", ()):
                if name == TRACE_HEADER:
                    os.environ[TRACE_ID_VARIABLE] = value.decode("latin-1")
                    break
        await self.app(scope, receive, send)


def bind_log_context(**keys: str | None) -> None:
    """Attach keys (``request_id``, ``session_id``) to every log line of this request.

    Powertools keeps these in a ContextVar, so concurrent requests do not mix them up.

    Parameters
    ----------
    **keys
        Keys to add; ``None`` values are skipped.
    """
    present = {name: value for name, value in keys.items() if value is not None}
    if present:
        get_logger().thread_safe_append_keys(**present)


class RequestMetrics:
    """Metrics of one request, flushed as one EMF document when the request ends.

    Powertools' ``EphemeralMetrics`` holds no process-wide state, so concurrent requests in
    one process (locally, or under uvicorn) never flush each other's values.
    """

    def __init__(self) -> None:
        self._values: list[tuple[str, str, float]] = []

    def add(self, name: str, unit: str, value: float) -> None:
        """Record a value.

        Parameters
        ----------
        name
            Metric name, e.g. ``TimeToFirstToken``.
        unit
            A CloudWatch unit name (``Milliseconds``, ``Count``).
        value
            The value.
        """
        self._values.append((name, unit, value))

    @property
    def names(self) -> list[str]:
        """Names recorded so far."""
        return [name for name, _, _ in self._values]

    def flush(self) -> None:
        """Emit the recorded values (to stdout, where Lambda ships them to CloudWatch)."""
        if not self._values or os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            return
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        metrics = EphemeralMetrics(
            namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", METRICS_NAMESPACE),
            service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME),
        )
        for name, unit, value in self._values:
            metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
        metrics.flush_metrics()
        self._values.clear()
