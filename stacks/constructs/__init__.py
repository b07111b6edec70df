"""Constructs of the chatbot: each capability in its own module."""

__all__ = [
    "build_context",
    "customization_asl",
    "customization_iam",
    "customization_jobs",
    "customization_pipeline",
    "front_door_api",
    "front_door_waf",
    "llm_endpoint",
    "log_retention",
    "model_assets_bucket",
    "nag_ids",
    "private_network",
    "serving_artifacts",
    "session_table",
]
