"""Fixtures for the local servers' tests: run ASGI apps under uvicorn on free loopback ports."""

from __future__ import annotations

from typing import Any

import pytest

from tests.servers import serve_asgi


@pytest.fixture(scope="session")
def serve_app() -> Any:
    """:func:`tests.servers.serve_asgi`, for tests that start their own servers."""
    return serve_asgi
