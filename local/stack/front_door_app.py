"""uvicorn factory for the local stack's front door: the deployed app plus the chat page at `/`."""

from __future__ import annotations

from fastapi import FastAPI

from front_door.app import build_app
from front_door.settings import Settings
from local.chat_page import mount_chat_page


def create_app() -> FastAPI:
    """Build the front door from ``CHATBOT_*`` variables and serve the chat page beside it.

    Run with ``uvicorn --factory local.stack.front_door_app:create_app``. The page is added
    here rather than inside the front door so that the deployed Lambda never carries it.

    Returns
    -------
    FastAPI
        The front-door app with the chat page mounted.
    """
    app = build_app(Settings())
    mount_chat_page(app)
    return app
