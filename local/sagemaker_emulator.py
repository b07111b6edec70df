"""Local SageMaker runtime: the real REST paths and event-stream framing, forwarding to containers.

Split in three modules beside this entry point: ``sagemaker_emulator_eventstream`` (framing),
``sagemaker_emulator_faults`` (SageMaker's errors, injected faults and scale-to-zero capacity)
and ``sagemaker_emulator_routes`` (the runtime and control routes).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import uvicorn
from fastapi import FastAPI
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from local.sagemaker_emulator_eventstream import encode_event, split_parts
from local.sagemaker_emulator_faults import EndpointFaults, SleepRequest
from local.sagemaker_emulator_routes import EmulatorState, add_control_routes, add_runtime_routes

__all__ = [
    "EmulatorSettings",
    "EndpointFaults",
    "SleepRequest",
    "build_app",
    "encode_event",
    "main",
    "split_parts",
]


class EmulatorSettings(BaseSettings):
    """Emulator settings (environment prefix ``SAGEMAKER_EMULATOR_``)."""

    model_config = SettingsConfigDict(env_prefix="SAGEMAKER_EMULATOR_", frozen=True)

    endpoints: dict[str, str] = Field(description="endpoint name -> container base URL")
    components: dict[str, str] = Field(
        default_factory=dict,
        description="inference component name -> its endpoint; such endpoints require the name",
    )
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
    asleep: list[str] = Field(
        default_factory=list, description="endpoints or components scaled to zero at start"
    )
    wake_after_s: float = Field(
        default=60.0, ge=0, description="how long a sleeping target takes to wake after a request"
    )


def build_app(settings: EmulatorSettings) -> FastAPI:
    """Build the SageMaker runtime emulator.

    Parameters
    ----------
    settings
        Endpoint names and their container URLs, components, part splitting, timeouts and
        the targets asleep at start.

    Returns
    -------
    FastAPI
        The app: ``POST /endpoints/{name}/invocations``,
        ``POST /endpoints/{name}/invocations-response-stream``, ``GET /ping``, and for tests
        ``GET|PUT|DELETE /_faults``, ``GET|PUT|DELETE /_capacity``, ``GET|DELETE /_stats``.
    """
    state = EmulatorState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # aiohttp rather than httpx: every streamed part passes through here, and aiohttp
        # reads one for a fraction of httpx's CPU (see inference_server.backend_client).
        timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.invoke_timeout_s, sock_read=settings.invoke_timeout_s
        )
        connector = aiohttp.TCPConnector(limit=0)  # SageMaker queues nothing in front
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as client:
            app.state.http = client
            yield

    app = FastAPI(
        title="SageMaker runtime emulator", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.emulator = state
    add_runtime_routes(app, state)
    add_control_routes(app, state)
    return app


def _named_url(value: str) -> tuple[str, str]:
    name, sep, url = value.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected NAME=http://HOST:PORT, got {value!r}")
    return name, url


def _component_arg(value: str) -> tuple[str, str]:
    name, sep, endpoint = value.partition("=")
    if not sep or not name or not endpoint:
        raise argparse.ArgumentTypeError(f"expected COMPONENT=ENDPOINT, got {value!r}")
    return name, endpoint


def main(argv: Sequence[str] | None = None) -> None:
    """Run the emulator under uvicorn (``python -m local.sagemaker_emulator``)."""
    parser = argparse.ArgumentParser(prog="python -m local.sagemaker_emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--endpoint",
        type=_named_url,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="an endpoint name and its container's base URL (repeatable)",
    )
    parser.add_argument(
        "--component",
        type=_component_arg,
        action="append",
        default=[],
        metavar="COMPONENT=ENDPOINT",
        help="an inference component hosted by an endpoint (repeatable)",
    )
    parser.add_argument("--max-part-bytes", type=int, help="split payload parts at most this big")
    parser.add_argument("--split-seed", type=int, help="split parts at random sizes (this seed)")
    parser.add_argument("--variant-name", default="AllTraffic")
    parser.add_argument(
        "--asleep", action="append", default=[], metavar="NAME", help="scaled to zero at start"
    )
    parser.add_argument("--wake-after-s", type=float, help="wake-up time after a refused request")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {"variant_name": args.variant_name}
    if args.endpoint:
        overrides["endpoints"] = dict(args.endpoint)
    if args.component:
        overrides["components"] = dict(args.component)
    if args.asleep:
        overrides["asleep"] = args.asleep
    for name in ("max_part_bytes", "split_seed", "wake_after_s"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
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
