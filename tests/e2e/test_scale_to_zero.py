"""A model scaled to zero, end to end: 503 + Retry-After, the page waits it out, then answers."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.conftest import WAKE_RETRY_AFTER_S, LocalStack
from tests.e2e.test_chat_page import FINISHED, browser  # noqa: F401 - the module's browser

QUESTION = "What does the front door do while a model is asleep?"
ANSWER_TIMEOUT_MS = 90_000


def _sessions(local_stack: LocalStack) -> list[dict[str, Any]]:
    response = httpx.get(f"{local_stack.front_door_url}/v1/sessions", timeout=30)
    response.raise_for_status()
    data: list[dict[str, Any]] = response.json()["data"]
    return data


def _sleep(local_stack: LocalStack, wake_after_s: float) -> None:
    body = {local_stack.chat_endpoint: {"asleep": True, "wake_after_s": wake_after_s}}
    httpx.put(f"{local_stack.emulator_url}/_capacity", json=body, timeout=30).raise_for_status()


@pytest.mark.timeout(120, func_only=True)  # the stack fixture has its own deadline
def test_asleep_the_api_answers_503_with_retry_after_and_stores_nothing(local_stack: LocalStack):
    before = _sessions(local_stack)
    _sleep(local_stack, wake_after_s=600)
    try:
        response = httpx.post(
            f"{local_stack.front_door_url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8},
            timeout=60,
        )
    finally:
        httpx.delete(f"{local_stack.emulator_url}/_capacity", timeout=30).raise_for_status()
    assert response.status_code == 503
    assert response.headers["retry-after"] == str(WAKE_RETRY_AFTER_S)
    assert response.json()["error"]["code"] == "model_waking_up"
    assert _sessions(local_stack) == before


@pytest.mark.timeout(180, func_only=True)  # the stack fixture has its own deadline
def test_page_shows_waking_up_then_answers_and_stores_only_the_answered_turn(
    browser: Browser,  # noqa: F811 - the fixture imported above
    local_stack: LocalStack,
):
    before = {s["session_id"] for s in _sessions(local_stack)}
    # Awake again a few seconds after the first refusal: the page retries at least once.
    _sleep(local_stack, wake_after_s=WAKE_RETRY_AFTER_S + 2)
    page = browser.new_page()
    page.set_default_timeout(ANSWER_TIMEOUT_MS)
    try:
        page.goto(f"{local_stack.front_door_url}/?max_tokens=16")
        page.fill("#prompt", QUESTION)
        page.click("#send")
        answer = page.locator(".message.assistant").last
        expect(answer).to_have_attribute("data-state", "waking")
        expect(answer.locator(".content")).to_have_text(re.compile(r"waking up, about 1 minute\b"))
        # Woken up, retried and streamed: a small CPU model, so allow for a slow machine.
        expect(answer).to_have_attribute("data-finish-reason", FINISHED, timeout=ANSWER_TIMEOUT_MS)
        expect(answer).not_to_have_attribute("data-state", "waking")
        text = answer.locator(".content").inner_text()
        assert text.strip()
        assert "waking up" not in text
        expect(page.locator("#error")).to_be_hidden()
    finally:
        page.close()
        httpx.delete(f"{local_stack.emulator_url}/_capacity", timeout=30).raise_for_status()
    refusals = httpx.get(f"{local_stack.emulator_url}/_stats", timeout=30).json()
    assert refusals["no_capacity_failures"].get(local_stack.chat_endpoint, 0) >= 1
    new = [s for s in _sessions(local_stack) if s["session_id"] not in before]
    assert len(new) == 1
    stored = httpx.get(
        f"{local_stack.front_door_url}/v1/sessions/{new[0]['session_id']}", timeout=30
    ).json()["messages"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[0]["content"] == QUESTION
    assert stored[1]["content"] == text
