"""Environment variable names the CDK app sets on the model containers and the front door."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FRONT_DOOR_PREFIX",
    "OPTION_PREFIX",
    "PROPERTIES_PATH_ENV",
    "FrontDoorSetting",
    "ServingOption",
]

OPTION_PREFIX = "OPTION_"
"""Prefix of the container's per-environment settings (the LMI ``serving.properties`` keys)."""

PROPERTIES_PATH_ENV = "SERVING_PROPERTIES_PATH"
"""Where the container's launcher reads ``serving.properties`` (default under /opt/ml/model)."""

FRONT_DOOR_PREFIX = "CHATBOT_"
"""Prefix of the front door's settings."""


class ServingOption(StrEnum):
    """``serving.properties`` keys that vary per environment, set as ``OPTION_<KEY>`` by the app.

    Each is a field of the container's ``ServingSettings`` (a test keeps the two in step).
    """

    MODEL_ID = "model_id"
    TENSOR_PARALLEL_DEGREE = "tensor_parallel_degree"
    MAX_MODEL_LEN = "max_model_len"
    DTYPE = "dtype"
    GPU_MEMORY_UTILIZATION = "gpu_memory_utilization"
    ENABLE_PREFIX_CACHING = "enable_prefix_caching"
    MAX_NEW_TOKENS_CAP = "max_new_tokens_cap"

    @property
    def env(self) -> str:
        """The environment variable name, e.g. ``OPTION_MODEL_ID``."""
        return OPTION_PREFIX + self.value.upper()


class FrontDoorSetting(StrEnum):
    """Front-door settings the app sets as ``CHATBOT_<NAME>``; each is a field of its Settings."""

    CHAT_ENDPOINT = "chat_endpoint"
    MODERATION_ENDPOINT = "moderation_endpoint"
    SESSION_TABLE = "session_table"
    SESSION_OWNER_INDEX = "session_owner_index"
    SESSION_TTL_DAYS = "session_ttl_days"
    BLOCKED_LABELS = "blocked_labels"
    REFUSAL_TEXT = "refusal_text"
    OUTPUT_MODERATION_MODE = "output_moderation_mode"
    AUTH_MODE = "auth_mode"
    MAX_TOKENS_LIMIT = "max_tokens_limit"
    # Hosting mode "inference_components" only: the components to name, and the Retry-After
    # of 503 model_waking_up while one scales out from zero.
    CHAT_COMPONENT = "chat_component"
    MODERATION_COMPONENT = "moderation_component"
    WAKE_RETRY_AFTER_S = "wake_retry_after_s"

    @property
    def env(self) -> str:
        """The environment variable name, e.g. ``CHATBOT_CHAT_ENDPOINT``."""
        return FRONT_DOOR_PREFIX + self.value.upper()
