"""Environment for every test suite: dummy AWS credentials and no model hub, set before imports."""

from __future__ import annotations

import os

# Tests talk only to local servers. Forcing dummy credentials (rather than defaulting them) means
# a developer's real AWS credentials can never reach a request made by a test.
for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(variable, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
# Models come from PyPI packages; nothing may be fetched from a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"


import pytest  # noqa: E402 - the environment above must be set before anything imports boto3

# Directories whose tests share one expensive session resource (a synth of every environment,
# the local stack, a loaded model): under pytest-xdist each stays on one worker, so the
# resource is built once. Other tests are grouped by module (module-scoped servers).
_SHARED_BY_DIRECTORY = ("infra", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the ``xdist_group`` that ``--dist loadgroup`` schedules by."""
    root = config.rootpath / "tests"
    for item in items:
        parts = item.path.relative_to(root).parts
        group = parts[0] if parts[0] in _SHARED_BY_DIRECTORY else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))
