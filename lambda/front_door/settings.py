"""Runtime settings of the front door, read from CHATBOT_* environment variables at start-up."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatbot_contracts.moderation import DEFAULT_BLOCKED_LABELS, MODERATION_LABELS
from chatbot_contracts.sessions import OWNER_INDEX_NAME

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class Settings(BaseSettings):
    """Validated front-door settings; a bad value stops start-up with a message naming it.

    Required fields (endpoint and table names) have no default: the CDK app always sets them.
    """

    model_config = SettingsConfigDict(env_prefix="CHATBOT_", frozen=True, extra="ignore")

    chat_endpoint: str = Field(min_length=1)
    moderation_endpoint: str = Field(min_length=1)
    session_table: str = Field(min_length=1)
    session_owner_index: str = OWNER_INDEX_NAME
    session_ttl_days: PositiveInt = 30
    blocked_labels: tuple[str, ...] = DEFAULT_BLOCKED_LABELS
    refusal_text: str = Field(
        default="I can't help with that request.",
        min_length=1,
    )
    auth_mode: Literal["iam", "cognito"] = "iam"
    # Inference components to name in each invocation (hosting mode "inference_components");
    # unset for single-model endpoints.
    chat_component: str | None = Field(default=None, min_length=1)
    moderation_component: str | None = Field(default=None, min_length=1)
    # Retry-After of the 503 model_waking_up sent while a component scales out from zero.
    wake_retry_after_s: PositiveInt = 300
    sagemaker_endpoint_url: str | None = None
    dynamodb_endpoint_url: str | None = None
    region: str | None = None

    # Limits on what a request may carry (413 above them).
    max_request_chars: PositiveInt = 32_000
    max_request_messages: PositiveInt = 64
    max_tokens_default: PositiveInt = 512
    # The CDK app sets it to the chat model's max_new_tokens_cap (the container's limit).
    max_tokens_limit: PositiveInt = 1024

    # Prompt history window: at most this many stored messages and characters.
    history_max_messages: PositiveInt = 20
    history_max_chars: PositiveInt = 24_000
    sessions_page_size: PositiveInt = 20

    # Output moderation: check the sliding window every N tokens or at a sentence end,
    # whichever comes first once at least `moderation_min_tokens` arrived since the last check.
    moderation_every_tokens: PositiveInt = 32
    moderation_min_tokens: PositiveInt = 8
    moderation_window_chars: PositiveInt = 2_000
    # "async": relay tokens at once and judge windows behind (at most every_tokens - 1 tokens
    # of a flagged window's successors reach the client); "sync": relay a token only once a
    # window containing it was judged clean (at most 2 * every_tokens tokens held back).
    output_moderation_mode: Literal["async", "sync"] = "async"

    # SageMaker runtime client: retries happen only before the first byte (botocore's retry
    # loop covers the initial call; an open event stream is never retried).
    endpoint_max_attempts: PositiveInt = 3
    endpoint_connect_timeout_s: PositiveFloat = 3.0
    endpoint_read_timeout_s: PositiveFloat = 120.0
    max_pool_connections: PositiveInt = 64
    conflict_retry_attempts: PositiveInt = 40
    # Session store client (botocore standard retry mode): retries after the first attempt of
    # a throttled, failed (5xx) or timed-out call; a call slower than the timeout is retried.
    dynamodb_retries: int = Field(default=4, ge=0, le=10)
    dynamodb_read_timeout_s: PositiveFloat = 10.0

    @property
    def components(self) -> dict[str, str]:
        """Inference component to name per endpoint (empty for single-model endpoints)."""
        pairs = (
            (self.chat_endpoint, self.chat_component),
            (self.moderation_endpoint, self.moderation_component),
        )
        return {endpoint: component for endpoint, component in pairs if component}

    @field_validator("blocked_labels")
    @classmethod
    def _labels_are_known(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(labels) - set(MODERATION_LABELS))
        if unknown:
            raise ValueError(f"unknown moderation labels {unknown}; known: {MODERATION_LABELS}")
        return labels

    @model_validator(mode="after")
    def _default_within_limit(self) -> Settings:
        if self.max_tokens_default > self.max_tokens_limit:
            raise ValueError(
                f"max_tokens_default ({self.max_tokens_default}) exceeds "
                f"max_tokens_limit ({self.max_tokens_limit})"
            )
        return self
