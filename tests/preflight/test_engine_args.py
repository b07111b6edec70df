"""check-engine-args: the launcher's vLLM argv is accepted by pinned vLLM; a bad flag fails.

Uses the side venv under .cache/ (built by `make setup`, or on first use).
"""

from __future__ import annotations

import pytest

from preflight.engine_args import check_engine_args, ensure_probe_env, probe, vllm_argv
from tests.preflight.conftest import environment

pytestmark = pytest.mark.timeout(1800)


def test_argv_is_the_launchers_with_the_environment_settings() -> None:
    argv = vllm_argv(environment("prod"), "chat")
    assert argv[:2] == ["vllm", "serve"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--dtype") + 1] == "float16"
    assert "--enable-prefix-caching" in argv


@pytest.fixture(scope="module")
def answers() -> dict[str, str | None]:
    """vLLM's answers to dev's argvs as the launcher builds them, and with a removed flag or an
    invalid value.

    One probe process for all of them: each import of vLLM costs several seconds.
    """
    config = environment("dev")
    python = ensure_probe_env(config.base_image.version or "")
    argvs = {f"dev {role}": vllm_argv(config, role) for role in ("chat", "moderation")}
    argvs |= {
        f"{role} unknown flag": [*vllm_argv(config, role), "--disable-log-requests"]
        for role in ("chat", "moderation")
    }
    argvs["chat invalid value"] = [*vllm_argv(config, "chat"), "--dtype", "float17"]
    return probe(python, argvs)


def test_every_role_passes(answers: dict[str, str | None], monkeypatch: pytest.MonkeyPatch) -> None:
    import preflight.engine_args as engine_args

    config = environment("dev")
    probed_argvs = {f"dev {role}": vllm_argv(config, role) for role in ("chat", "moderation")}

    def probed(_: object, argvs: dict[str, list[str]]) -> dict[str, str | None]:
        # vLLM's answers, from the shared probe, to the very argvs check_engine_args builds.
        assert argvs == probed_argvs
        return {label: answers[label] for label in argvs}

    assert answers["dev chat"] is None
    assert answers["dev moderation"] is None
    monkeypatch.setattr(engine_args, "probe", probed)
    good = list(check_engine_args(["dev"]))
    assert [r.status for r in good] == ["ok", "ok"], [r.line for r in good]


def test_an_unknown_flag_fails(answers: dict[str, str | None]) -> None:
    for role in ("chat", "moderation"):
        refusal = answers[f"{role} unknown flag"]
        assert refusal is not None
        assert "unrecognized arguments: --disable-log-requests" in refusal


def test_an_invalid_value_fails(answers: dict[str, str | None]) -> None:
    refusal = answers["chat invalid value"]
    assert refusal is not None
    assert "argument --dtype: invalid choice: 'float17'" in refusal


def test_a_refusal_fails_its_role_with_the_fix_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import preflight.engine_args as engine_args

    def refuse_chat(_: object, argvs: dict[str, list[str]]) -> dict[str, str | None]:
        return {label: ("bad flag" if label.endswith("chat") else None) for label in argvs}

    monkeypatch.setattr(engine_args, "probe", refuse_chat)
    chat, moderation = check_engine_args(["dev"])
    assert chat.status == "FAIL"
    assert "bad flag: fix build_vllm_command or the settings in cdk.json" in chat.message
    assert moderation.status == "ok"
