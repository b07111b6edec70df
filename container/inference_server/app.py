"""Application factory: builds the FastAPI app and loads the role's resources in its lifespan."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from inference_server.api_router import router
from inference_server.backend_client import BackendClient
from inference_server.error_handlers import install_error_handlers
from inference_server.services import Services, load_role
from inference_server.settings import ServingSettings

__all__ = ["build_app"]


def build_app(settings: ServingSettings) -> FastAPI:
    """Build the SageMaker-contract app (``GET /ping``, ``POST /invocations``).

    Resources load in the background so that ``/ping`` answers 503 while they do.

    Parameters
    ----------
    settings
        Validated settings, including the backend's URL.

    Returns
    -------
    FastAPI
        The application; ``app.state.services`` holds its resources once started.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = BackendClient(settings.backend_url, settings.served_model_name)
        services = Services(settings=settings, backend=backend)
        app.state.services = services
        loader = asyncio.create_task(load_role(services))
        try:
            yield
        finally:
            loader.cancel()
            if services.chat is not None:
                await services.chat.aclose()
            await backend.aclose()

    app = FastAPI(
        title="inference-server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)
    app.include_router(router)
    return app
