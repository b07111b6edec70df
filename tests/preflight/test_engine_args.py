"""check-engine-args: the launcher's vLLM argv is accepted by pinned vLLM; a bad flag fails.

Uses the side venv under .cache/ (built by `make setup`, or on first use).
"""

from __future__ import annotations

import pytest

from preflight.engine_args import check_engine_args, vllm_argv
from tests.preflight.conftest import environment

pytestmark = pytest.mark.timeout(1800)


def test_argv_is_the_launchers_with_the_environment_settings() -> None:
    argv = vllm_argv(environment("prod"), "chat")
    assert argv[:2] == ["vllm", "serve"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "4"
    assert argv[argv.index("--dtype") + 1] == "float16"
    assert "--enable-prefix-caching" in argv


def test_every_role_passes_and_an_unknown_flag_fails() -> None:
    good = list(check_engine_args(["dev"]))
    assert [r.status for r in good] == ["ok", "ok"], [r.line for r in good]
    bad = list(check_engine_args(["dev"], extra_args=["--disable-log-requests"]))
    assert [r.status for r in bad] == ["FAIL", "FAIL"]
    assert "unrecognized arguments: --disable-log-requests" in bad[0].message


def test_an_invalid_value_fails() -> None:
    [chat, _] = check_engine_args(["dev"], extra_args=["--dtype", "float17"])
    assert chat.status == "FAIL"
    assert "argument --dtype: invalid choice: 'float17'" in chat.message
