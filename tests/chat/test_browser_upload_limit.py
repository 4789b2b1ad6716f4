"""In a real headless Chromium: an audio file over --max-upload-mb is refused on the page with a message
naming the limit, and nothing reaches the server. Skipped without chromium (tests/browser_support.py)."""

import wave

import pytest

from rhizome.chat.app import ChatPage
from tests.browser_support import chat_page_served, chromium_driver, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tiny_chat_model_dir, small_memory_dir):
    from rhizome.chat.stt import load_stt

    def page(session):
        return ChatPage(session, stt=load_stt("whisper"))

    with chat_page_served(tiny_chat_model_dir, small_memory_dir, page, {"max_upload_mb": 0.05}) as chat:
        yield chat


def test_an_upload_over_the_limit_gets_a_message_on_the_page(served, tmp_path):
    from selenium.webdriver.common.by import By

    long_take = tmp_path / "long_take.wav"
    with wave.open(str(long_take), "wb") as out:  # 3 s of silence at 16 kHz: 96 KB, over the 51 KB limit
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * 48000)
    with chromium_driver() as browser:
        browser.get(served.url)
        label = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#voice-input")).text
        assert "up to 0.05 MB" in label
        wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR,
                                                     '#voice-input button[aria-label="Upload file"]')).click()
        browser.find_element(By.CSS_SELECTOR, '#voice-input input[type="file"]').send_keys(str(long_take))
        toast = wait_until(browser, lambda d: [t.text for t in d.find_elements(By.CSS_SELECTOR, ".toast-body")
                                               if "exceed" in t.text])
    assert "maximum allowed size of 51.2 Kb" in toast[0] and "long_take.wav" in toast[0]
    assert not served.app.upload_file_set, "the page refused the file before sending it"
