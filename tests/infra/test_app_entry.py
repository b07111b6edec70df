"""app.py as the CDK CLI runs it: context from cdk.json plus CDK_CONTEXT_JSON, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.infra.conftest import REPO_ROOT


@pytest.mark.timeout(120)
def test_unknown_environment_fails_with_the_known_ones_listed() -> None:
    env = dict(os.environ, CDK_CONTEXT_JSON=json.dumps({"env": "qa"}))
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "app.py")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert result.returncode == 1
    # The bare app read cdk.json itself (CDK_CONTEXT_JSON carried only `env`).
    assert "unknown environment 'qa'; known environments: dev, prod, staging" in result.stderr
    assert "Traceback" not in result.stderr
