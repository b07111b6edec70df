"""The chat page in headless Chromium: a typed question gets a streamed answer and sources."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.e2e.conftest import LocalStack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
QUESTION = "How are chat sessions stored in DynamoDB?"
FINISHED = re.compile(r"^(stop|length)$")

# Records every text length the streaming answer goes through, so the test can tell a
# streamed answer (many lengths) from one that arrived whole (one length).
RECORD_ANSWER_GROWTH = """
window.answerLengths = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('.message.assistant .content');
  if (answers.length) window.answerLengths.push(answers[answers.length - 1].textContent.length);
}).observe(document.getElementById('messages'),
           {childList: true, subtree: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Debian's chromium is missing: run `make browser` (apt-get install)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, local_stack: LocalStack) -> Iterator[Page]:
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{local_stack.front_door_url}/?max_tokens=16")
    yield page
    page.close()


@pytest.mark.timeout(120, func_only=True)  # the stack fixture has its own deadline
def test_question_gets_a_streamed_answer_and_a_source(page: Page):
    page.evaluate(RECORD_ANSWER_GROWTH)

    page.fill("#prompt", QUESTION)
    page.click("#send")

    answer = page.locator(".message.assistant").last
    expect(answer).to_have_attribute("data-finish-reason", FINISHED, timeout=90_000)
    expect(answer.locator(".sources li").first).to_be_visible()
    expect(page.locator("#error")).to_be_hidden()
    lengths = page.evaluate("window.answerLengths")
    growth = sorted({n for n in lengths if n > 0})
    assert len(growth) >= 2, f"answer did not stream: lengths seen {lengths}"
    assert answer.locator(".content").inner_text().strip()
    expect(page.locator(".message.user").last).to_have_text("You" + QUESTION)


@pytest.mark.timeout(120, func_only=True)  # the stack fixture has its own deadline
def test_sessions_are_listed_reopened_continued_and_deleted(page: Page, local_stack: LocalStack):
    page.fill("#prompt", "Say hello.")
    page.click("#send")
    answer = page.locator(".message.assistant").last
    expect(answer).to_have_attribute("data-finish-reason", FINISHED, timeout=90_000)
    session_label = page.locator("#session-label").inner_text()
    assert session_label.startswith("Session ")
    session_id = session_label.removeprefix("Session ")
    listed = page.locator(f'#session-list li[data-session-id="{session_id}"]')
    expect(listed).to_be_visible()

    page.click("#new-chat")
    expect(page.locator(".message")).to_have_count(0)
    listed.locator(".open-session").click()
    expect(page.locator(".message")).to_have_count(2)
    expect(page.locator(".message.user")).to_contain_text("Say hello.")

    page.fill("#prompt", "Say it again.")
    page.click("#send")
    expect(page.locator(".message.assistant").last).to_have_attribute(
        "data-finish-reason", FINISHED, timeout=90_000
    )
    expect(page.locator("#session-label")).to_have_text(session_label)
    stored = httpx.get(f"{local_stack.front_door_url}/v1/sessions/{session_id}", timeout=10)
    assert [m["content"] for m in stored.json()["messages"] if m["role"] == "user"] == [
        "Say hello.",
        "Say it again.",
    ]

    listed.locator(".delete-session").click()
    expect(listed).to_have_count(0)
    expect(page.locator(".message")).to_have_count(0)


@pytest.mark.timeout(60, func_only=True)  # the stack fixture has its own deadline
def test_a_refused_request_is_reported_with_its_status_and_message(
    browser: Browser, local_stack: LocalStack
):
    page = browser.new_page()
    try:
        # Far above the front door's max_tokens limit: refused before anything streams.
        page.goto(f"{local_stack.front_door_url}/?max_tokens=1000000")
        page.fill("#prompt", "Hello")
        page.click("#send")

        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text(re.compile(r"Request failed \(HTTP 4\d\d\): \S"))
        expect(page.locator(".message.assistant").last).to_have_attribute(
            "data-finish-reason", "error"
        )
    finally:
        page.close()
