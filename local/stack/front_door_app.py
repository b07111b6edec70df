"""uvicorn factory for the local stack's front door: the deployed app plus the chat page at `/`."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from front_door.app import build_app
from front_door.settings import Settings
from local.chat_page import mount_chat_page
from local.fixed_principal import DEFAULT_LOCAL_PRINCIPAL, FixedPrincipal
from local.stack.config import HEALTH_URLS_VARIABLE

_PROBE_TIMEOUT_S = 2.0


class StackHealthGate:
    """Answers ``GET /healthz`` with 503 until every other part of the stack is healthy.

    The deployed front door's ``/healthz`` says only that the front door runs; locally one URL
    should tell whether the whole chatbot can answer, so this checks the listed parts first
    and names those still starting.
    """

    def __init__(self, app: ASGIApp, *, health_urls: Sequence[str]) -> None:
        self.app = app
        self.health_urls = tuple(health_urls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Gate ``GET /healthz``; pass every other request through untouched."""
        if scope["type"] == "http" and scope["path"] == "/healthz" and self.health_urls:
            waiting = await self.unhealthy_parts()
            if waiting:
                response = JSONResponse(
                    {"status": "starting", "waiting_for": waiting}, status_code=503
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def unhealthy_parts(self) -> list[str]:
        """The health URLs that do not answer 200 right now."""
        async with httpx.AsyncClient(timeout=_PROBE_TIMEOUT_S, trust_env=False) as client:

            async def healthy(url: str) -> bool:
                try:
                    return (await client.get(url)).status_code == 200
                except httpx.HTTPError:
                    return False

            results = await asyncio.gather(*(healthy(url) for url in self.health_urls))
        return [url for url, ok in zip(self.health_urls, results, strict=True) if not ok]


def create_app() -> FastAPI:
    """Build the front door from ``CHATBOT_*`` variables and serve the chat page beside it.

    Run with ``uvicorn --factory local.stack.front_door_app:create_app``. The page and the
    fixed caller (``LOCAL_PRINCIPAL``, default ``local-user``, in place of API Gateway's
    authentication) are added here rather than inside the front door, so that the deployed
    Lambda never carries them. ``STACK_HEALTH_URLS`` (a JSON list) makes ``/healthz`` wait for
    the other parts.

    Returns
    -------
    FastAPI
        The front-door app with the chat page mounted.
    """
    app = build_app(Settings())
    mount_chat_page(app)
    health_urls = json.loads(os.environ.get(HEALTH_URLS_VARIABLE, "[]"))
    app.add_middleware(StackHealthGate, health_urls=health_urls)
    app.add_middleware(
        FixedPrincipal, name=os.environ.get("LOCAL_PRINCIPAL", DEFAULT_LOCAL_PRINCIPAL)
    )
    return app
