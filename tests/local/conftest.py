"""Fixtures for the local servers' tests: run ASGI apps under uvicorn on free loopback ports."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.servers import serve_asgi

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def serve_app() -> Any:
    """:func:`tests.servers.serve_asgi`, for tests that start their own servers."""
    return serve_asgi
