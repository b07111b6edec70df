"""OpenAI-compatible streaming chat front door: FastAPI app served under the Lambda Web Adapter."""

from front_door.app import build_app, create_app
from front_door.settings import Settings

__all__ = ["Settings", "build_app", "create_app"]
