"""serving.properties parsing and OPTION_* overrides."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from inference_server.settings import load_settings, read_properties
from tests.container.helpers import CHAT_PROPERTIES, MODERATION_PROPERTIES


def test_properties_file_is_read_and_option_env_wins(tmp_path: Path, monkeypatch) -> None:
    properties = tmp_path / "serving.properties"
    properties.write_text(
        "engine=Python\n# comment\noption.role=chat\noption.model_id=s3://bucket/models/m/\n"
        "option.max_model_len=4096\noption.tensor_parallel_degree=2\n"
    )
    monkeypatch.setenv("OPTION_MAX_MODEL_LEN", "8192")
    monkeypatch.setenv("OPTION_ENABLE_PREFIX_CACHING", "false")
    settings = load_settings(properties)
    assert settings.max_model_len == 8192
    assert settings.tensor_parallel_degree == 2
    assert settings.enable_prefix_caching is False
    assert settings.model_id == "s3://bucket/models/m/"
    assert settings.model_dir == tmp_path
    assert settings.resolve("index") == str(tmp_path / "index")
    assert settings.resolve("s3://b/k") == "s3://b/k"


def test_stop_words_accept_plain_comma_and_json(monkeypatch) -> None:
    monkeypatch.setenv("OPTION_MODEL_ID", "/models/x")
    assert load_settings(CHAT_PROPERTIES).stop_words == ["<human>"]
    monkeypatch.setenv("OPTION_STOP_WORDS", '["<human>", "</s>"]')
    assert load_settings(CHAT_PROPERTIES).stop_words == ["<human>", "</s>"]
    monkeypatch.setenv("OPTION_STOP_WORDS", "<human>,<bot>")
    assert load_settings(CHAT_PROPERTIES).stop_words == ["<human>", "<bot>"]


def test_missing_model_id_is_named(monkeypatch) -> None:
    monkeypatch.delenv("OPTION_MODEL_ID", raising=False)
    with pytest.raises(ValidationError, match="model_id"):
        load_settings(CHAT_PROPERTIES)


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("OPTION_TENSOR_PARALLEL_DEGREE", "zero", "tensor_parallel_degree"),
        ("OPTION_GPU_MEMORY_UTILIZATION", "1.5", "gpu_memory_utilization"),
        ("OPTION_ROLE", "summarize", "role"),
        ("OPTION_MAX_NEW_TOKENS_CAP", "4096", "max_new_tokens_cap"),
    ],
)
def test_bad_values_stop_start_up_naming_the_field(monkeypatch, name, value, field) -> None:
    monkeypatch.setenv("OPTION_MODEL_ID", "/models/x")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=field):
        load_settings(CHAT_PROPERTIES)


def test_shipped_artifacts_parse(monkeypatch) -> None:
    monkeypatch.setenv("OPTION_MODEL_ID", "s3://bucket/models/m/")
    chat = load_settings(CHAT_PROPERTIES)
    moderation = load_settings(MODERATION_PROPERTIES)
    assert (chat.role, moderation.role) == ("chat", "moderation")
    assert Path(chat.resolve(chat.prompt_template)).is_file()
    assert Path(chat.resolve(chat.retrieval_index), "index.faiss").is_file()
    assert Path(moderation.resolve(moderation.moderation_prompt)).is_file()
    assert "model_id" not in read_properties(CHAT_PROPERTIES)
