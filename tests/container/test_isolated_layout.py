"""The layout a network-isolated endpoint gets: weights in /opt/ml/model, artifacts beneath.

SageMaker downloads one uncompressed S3 prefix into /opt/ml/model: the weights, and under
``serving/<role>-<digest>/`` the staged model artifacts. The CDK app sets
``OPTION_MODEL_ID=/opt/ml/model`` and ``SERVING_PROPERTIES_PATH`` to the staged
serving.properties; the container must then start with no S3 access at all.
"""

import shutil
from pathlib import Path

import pytest

import inference_server.artifacts
from chatbot_contracts.options import PROPERTIES_PATH_ENV
from inference_server.launcher import prepare_settings
from inference_server.settings import LauncherSettings, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def _no_s3() -> None:
    raise AssertionError("the container reached for S3 under network isolation")


def test_isolated_layout_resolves_everything_locally(tmp_path: Path, monkeypatch) -> None:
    model_dir = tmp_path / "opt-ml-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")  # stands in for the weights
    staged = model_dir / "serving" / ("chat-" + "0" * 64)
    shutil.copytree(REPO_ROOT / "model_artifacts" / "chat", staged)
    monkeypatch.setattr(inference_server.artifacts, "_s3_client", _no_s3)
    monkeypatch.setenv("OPTION_MODEL_ID", str(model_dir))
    monkeypatch.setenv("SERVING_PROPERTIES_PATH", str(staged / "serving.properties"))

    settings = load_settings(staged / "serving.properties")
    assert settings.model_dir == staged
    prepared, command = prepare_settings(settings)

    assert command is not None
    assert command[:3] == ["vllm", "serve", str(model_dir.resolve())]
    assert prepared.tokenizer == str(model_dir.resolve())
    # Relative artifact paths resolve in the staged folder, not next to the weights.
    assert Path(prepared.resolve(prepared.retrieval_index)) == staged / "index"
    assert (staged / "index").is_dir()
    assert Path(prepared.resolve(prepared.prompt_template)).is_file()
    assert prepared.embedding_model.startswith("package:")  # shipped in the image


def test_missing_weights_directory_fails_fast(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(inference_server.artifacts, "_s3_client", _no_s3)
    monkeypatch.setenv("OPTION_MODEL_ID", str(tmp_path / "absent"))
    settings = load_settings(REPO_ROOT / "model_artifacts" / "chat" / "serving.properties")
    with pytest.raises(FileNotFoundError, match=r"option\.model_id"):
        prepare_settings(settings)


def test_the_app_and_the_launcher_agree_on_the_properties_variable() -> None:
    assert LauncherSettings.model_fields["properties"].validation_alias == PROPERTIES_PATH_ENV
