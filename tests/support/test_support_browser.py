"""The support page in a real headless browser (Debian's chromium and chromedriver,
driven by Selenium; nothing downloads a browser), served by uvicorn on loopback the way
`cascade-notify serve --support` serves it: at /support, signed in by a bearer token.

Outside CI the test skips when chromium is absent; under CI=true it fails instead.
It saves the screenshots docs/support.md shows."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cascade_notify.cli.serve import with_support
from cascade_notify.support import AGENT_TOKEN_ENV, TOKEN_ENV
from cascade_notify.webhooks import asgi_app

from .scene import TYPED, Scene

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: Where the screenshots go: docs/img (what docs/support.md shows) when
#: CASCADE_NOTIFY_SCREENSHOTS=docs is set, so a plain test run leaves the tree clean.
DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
SHOTS = (
    DOCS_IMG
    if os.environ.get("CASCADE_NOTIFY_SCREENSHOTS") == "docs"
    else Path(tempfile.mkdtemp(prefix="support-shots-"))
)
AGENT_TOKEN = "agent-token-0123456789"
OPERATOR_TOKEN = "operator-token-0123456789"


def _browser_present() -> bool:
    return CHROMIUM.exists() and CHROMEDRIVER.exists() and shutil.which("chromium") is not None


if not _browser_present():
    if os.environ.get("CI") == "true":
        pytest.fail(
            "CI=true but /usr/bin/chromium or /usr/bin/chromedriver is missing: "
            ".ci/run installs Debian's chromium and chromium-driver",
            pytrace=False,
        )
    pytest.skip(
        "no /usr/bin/chromium (apt-get install chromium chromium-driver)", allow_module_level=True
    )

selenium = (
    pytest.importorskip("selenium") if os.environ.get("CI") != "true" else __import__("selenium")
)
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.implicitly_wait(10)  # an element looked for after a click waits for its page
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def served(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The receipts app with the support page at /support, as `serve --support` builds
    it, under uvicorn on loopback in this event loop (the notifier on the fake clock)."""
    import uvicorn

    monkeypatch.setenv(TOKEN_ENV, OPERATOR_TOKEN)
    monkeypatch.setenv(AGENT_TOKEN_ENV, AGENT_TOKEN)
    app = with_support(asgi_app(scene.notifier), scene.notifier)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        await asyncio.sleep(0.01)  # real time: uvicorn binding its socket
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}/support"
    finally:
        server.should_exit = True
        await task


def _sign_in(driver: Any, token: str | None) -> None:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


async def _run(work: Any, *args: Any) -> Any:
    # Selenium blocks: in a thread, so uvicorn in this loop answers meanwhile
    return await asyncio.to_thread(work, *args)


async def test_agent_finds_the_delivery_by_a_national_number_and_reads_its_story(
    served: str, browser: Any, scene: Scene
) -> None:
    """An agent types `8 (916) 123-45-67` in the search box, opens the delivery, and reads
    that it was delivered on Viber after WhatsApp failed."""

    def agent() -> tuple[str, str, str]:
        _sign_in(browser, AGENT_TOKEN)
        browser.get(served + "/")
        box = browser.find_element(By.ID, "q")
        box.send_keys(TYPED)
        box.submit()
        found = browser.find_element(By.ID, "found-by").text
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "support-search.png"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#deliveries tbody tr")
        assert len(rows) == 1
        rows[0].find_element(By.TAG_NAME, "a").click()
        outcome = browser.find_element(By.ID, "outcome").text
        story = browser.find_element(By.ID, "timeline").text
        browser.save_screenshot(str(SHOTS / "support-delivery.png"))
        return found, outcome, story

    found, outcome, story = await _run(agent)
    assert "Found by phone number +79•••••••67" in found
    assert outcome == "delivered on viber: reached the customer."
    lines = story.splitlines()
    whatsapp_failed = next(
        i for i, line in enumerate(lines) if "whatsapp" in line and "receipt failed" in line
    )
    viber_delivered = next(
        i for i, line in enumerate(lines) if "viber" in line and "receipt delivered" in line
    )
    assert whatsapp_failed < viber_delivered
    assert "message undeliverable [131026]" in lines[whatsapp_failed]


async def test_operator_sees_the_open_whatsapp_breaker_and_closes_it(
    served: str, browser: Any, scene: Scene
) -> None:
    def operator() -> tuple[str, str, str]:
        _sign_in(browser, OPERATOR_TOKEN)
        browser.get(served + "/operator")
        first = browser.find_element(By.CSS_SELECTOR, "#breakers tbody tr").text
        browser.save_screenshot(str(SHOTS / "support-operator.png"))
        row = browser.find_element(By.ID, "breaker-wa")
        row.find_element(By.NAME, "reason").send_keys("Meta says it is fixed")
        row.find_element(By.TAG_NAME, "button").click()
        changed = browser.find_element(By.ID, "changed").text
        after = browser.find_element(By.ID, "breaker-wa").text
        return first, changed, after

    first, changed, after = await _run(operator)
    assert first.startswith("wa open (by hand)") and "Meta outage since 10:00" in first
    assert changed == "wa: breaker closed"
    assert after.startswith("wa closed") and "Meta says it is fixed" in after
    [wa] = [b for b in await scene.notifier.breakers.list() if b.provider == "wa"]
    assert wa.state == "closed"


async def test_without_a_token_the_page_is_401(served: str, browser: Any) -> None:
    def nobody() -> str:
        _sign_in(browser, None)
        browser.get(served + "/")
        text: str = browser.find_element(By.TAG_NAME, "h1").text
        return text

    assert await _run(nobody) == "401 Sign in"
    async with httpx.AsyncClient() as http:
        answer = await http.get(served + "/")
    assert answer.status_code == 401


async def test_a_hostile_provider_error_renders_as_text(
    served: str, browser: Any, scene: Scene
) -> None:
    """The provider's `<script>` error shows as text on the timeline: no script ran (the
    title is ours), no element came from it."""

    def look() -> tuple[str, str, int]:
        _sign_in(browser, OPERATOR_TOKEN)
        browser.get(f"{served}/d/{scene.mallory}")
        story: str = browser.find_element(By.ID, "timeline").text
        injected = len(browser.find_elements(By.CSS_SELECTOR, "#timeline script, #timeline img"))
        return browser.title, story, injected

    title, story, injected = await _run(look)
    assert title.startswith("Delivery ")
    assert '<script>alert("pwned")</script>' in story
    assert injected == 0
