"""Once the stack says it is ready, the front door reports the whole stack healthy."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import LocalStack


@pytest.mark.timeout(30, func_only=True)  # the stack fixture has its own deadline
def test_front_door_healthz_and_chat_page_are_up_once_ready(local_stack: LocalStack):
    health = httpx.get(f"{local_stack.front_door_url}/healthz", timeout=10)
    page = httpx.get(f"{local_stack.front_door_url}/", timeout=10)

    assert health.status_code == 200
    assert health.json() == {"status": "ok"}
    assert page.status_code == 200
    assert '<script src="chat-page/app.js">' in page.text
