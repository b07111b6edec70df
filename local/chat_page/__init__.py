"""Chat page: static HTML/JS/CSS served at `/` of a FastAPI app (the front door in local mode)."""

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["STATIC_DIR", "chat_page_router", "mount_chat_page"]

STATIC_DIR = Path(str(resources.files(__name__).joinpath("static")))
_ASSETS_PREFIX = "/chat-page"
_MOUNTED_FLAG = "chat_page_mounted"


def chat_page_router() -> APIRouter:
    """Build the router that serves the page itself at ``GET /``.

    Returns
    -------
    APIRouter
        A router with one route; the page's assets are served by :func:`mount_chat_page`.
    """
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        # no-cache: a developer editing app.js should see the change on reload
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    return router


def mount_chat_page(app: FastAPI) -> None:
    """Serve the chat page at ``/`` and its assets under ``/chat-page/`` of ``app``.

    Safe to call more than once on the same app (the second call does nothing), so both the
    front door's ``build_app`` and the local stack may call it.

    Parameters
    ----------
    app
        The FastAPI application whose API the page talks to (same origin, relative URLs).
    """
    if getattr(app.state, _MOUNTED_FLAG, False):
        return
    app.include_router(chat_page_router())
    app.mount(_ASSETS_PREFIX, StaticFiles(directory=STATIC_DIR), name="chat-page-assets")
    setattr(app.state, _MOUNTED_FLAG, True)
