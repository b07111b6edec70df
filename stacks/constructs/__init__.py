"""Constructs of the chatbot: each capability in its own module."""

__all__ = [
    "build_context",
    "front_door_api",
    "llm_endpoint",
    "model_artifact",
    "model_assets_bucket",
    "session_table",
]
