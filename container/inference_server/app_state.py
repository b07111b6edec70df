"""Typed access to the resources the lifespan stores on ``app.state``."""

from __future__ import annotations

from fastapi import FastAPI

from inference_server.errors import NotReadyError
from inference_server.services import Services

__all__ = ["services_of"]


def services_of(app: FastAPI) -> Services:
    """Return the app's ``Services``; 503 if the lifespan has not set them up.

    Parameters
    ----------
    app
        The running application.

    Returns
    -------
    Services
        Its resources.
    """
    services: Services | None = getattr(app.state, "services", None)
    if services is None:
        raise NotReadyError("server is starting")
    return services
