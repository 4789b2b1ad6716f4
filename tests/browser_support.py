"""A headless Chromium for the tests that look at a served page (and bench/studio.py), a free localhost port to
serve the page on, and the chat page served with a tiny model.

A test needing the browser is skipped when Debian's chromium / chromium-driver are not installed, unless
RHIZOME_REQUIRE_BROWSER=1 (CI): there it fails, so a missing browser cannot pass unseen.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import pytest

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
# Without the networking flags Chromium's own background connections are refused here and it stalls.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]


def browser_installed() -> bool:
    return os.path.exists(CHROMIUM) and CHROMEDRIVER is not None


def require_browser() -> None:
    if browser_installed():
        return
    message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    if os.environ.get("RHIZOME_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def chromium_driver(extra_flags: Sequence[str] = ()) -> Iterator:
    """A Selenium driver of headless Chromium with a fresh profile, quit and its profile deleted on leaving."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    with tempfile.TemporaryDirectory(prefix="rhizome-chromium-") as profile:
        for flag in [*CHROMIUM_FLAGS, *extra_flags, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def wait_until(driver, condition, seconds: float = 30):
    """``condition(driver)``'s first truthy value, polled every 50 ms."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds, poll_frequency=0.05).until(condition)


class ServedChat(NamedTuple):
    url: str
    model: Any  # the ChatModel, to read what generation did
    app: Any  # the Gradio app, to read what reached the server


@contextlib.contextmanager
def chat_page_served(model_dir: str, memory_dir, make_page: Callable, config_settings: dict | None = None,
                     **app_settings) -> Iterator[ServedChat]:
    """The real chat page on a free localhost port, closed on leaving: the model in ``model_dir`` on the CPU, the
    memory in ``memory_dir``; ``make_page(session)`` builds the ChatPage with the speech parts the test wants."""
    require_browser()
    from rhizome.chat.app import build_app
    from rhizome.chat.config import ChatConfig
    from rhizome.chat.llm import ChatModel
    from rhizome.chat.retrieval import ChatMemory
    from rhizome.chat.server import launch
    from rhizome.chat.session import ChatSession

    config = ChatConfig(**{"memory_dir": str(memory_dir), "remember": False, "min_score": 0.2, "port": free_port(),
                           **(config_settings or {})})
    model = ChatModel.load(model_dir, None, device="cpu")
    session = ChatSession(config, model, ChatMemory.from_config(config, count_tokens=model.count_tokens))
    app = build_app(make_page(session), max_upload_mb=config.max_upload_mb, **app_settings)
    url, _ = launch(app, config)
    try:
        yield ServedChat(url, model, app)
    finally:
        app.close(verbose=False)
