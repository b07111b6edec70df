"""FastAPI application factory; the same app runs under uvicorn and the Lambda Web Adapter."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from front_door.api_router import router
from front_door.error_handlers import install_error_handlers
from front_door.observability import install_tracing
from front_door.settings import Settings


def build_app(settings: Settings) -> FastAPI:
    """Build the front-door app; AWS clients are created in its lifespan.

    Parameters
    ----------
    settings
        Validated runtime settings.

    Returns
    -------
    FastAPI
        The application, with ``settings`` in ``app.state``; the lifespan adds
        ``chat_service`` and ``session_store``.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Imported here so that building the app (Lambda init) does not pay for boto3.
        from front_door.chat import ChatService
        from front_door.endpoint_client import EndpointClient, create_sagemaker_runtime_client
        from front_door.moderation import Moderator
        from front_door.sessions import SessionStore

        # One client per endpoint: adaptive retry mode rate-limits a client after throttling,
        # and a throttled chat endpoint must not slow down moderation (or the reverse).
        chat_runtime = create_sagemaker_runtime_client(settings)
        moderation_runtime = create_sagemaker_runtime_client(settings)
        limit = settings.max_pool_connections
        components, retry_after = settings.components, settings.wake_retry_after_s
        endpoints = EndpointClient(
            chat_runtime,
            max_concurrency=limit,
            components=components,
            wake_retry_after_s=retry_after,
        )
        moderation_endpoints = EndpointClient(
            moderation_runtime,
            max_concurrency=limit,
            components=components,
            wake_retry_after_s=retry_after,
        )
        moderator = Moderator(
            moderation_endpoints, settings.moderation_endpoint, settings.blocked_labels
        )
        store = SessionStore.from_settings(settings)
        app.state.session_store = store
        app.state.chat_service = ChatService(settings, endpoints, moderator, store)
        # What is loaded now (boto3's service models above all) lives as long as the process:
        # keep it out of every later collection, so that per-request garbage is collected
        # cheaply. No gc.collect() first: freezing alone costs next to nothing.
        gc.freeze()
        try:
            yield
        finally:
            endpoints.close()
            moderation_endpoints.close()
            chat_runtime.close()
            moderation_runtime.close()

    app = FastAPI(
        title="Chatbot front door",
        version="0.1.0",
        description="OpenAI-compatible streaming chat with server-side sessions and moderation.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_error_handlers(app)
    install_tracing(app)
    app.include_router(router)
    return app


def create_app() -> FastAPI:
    """uvicorn ``--factory`` entry point: settings from the ``CHATBOT_*`` environment.

    Returns
    -------
    FastAPI
        The application.
    """
    return build_app(Settings())  # required fields come from the environment
