"""The Train tab in a real headless Chromium, on real train_script.py subprocesses of a tiny model: a run started
from the form draws its loss curve as it trains, stops with a checkpoint, resumes and finishes; a second run is
queued behind it, and Compare draws both.

Skipped without chromium unless RHIZOME_REQUIRE_BROWSER=1 (tests/browser_support.py).
"""

import re
import shutil
import signal
import time

import pytest

from rhizome.chat.config import ChatConfig
from rhizome.chat.server import launch
from rhizome.studio.page import StudioPage, build_studio
from tests.browser_support import chromium_driver, free_port, require_browser, wait_until
from tests.train.conftest import FIXTURES

pytestmark = pytest.mark.slow  # a real browser and three short trainings

# Every step logged, a checkpoint and evaluation every 4.
STEPS = 60  # run-a's: still training when the test freezes it after seeing its curve grow, even on an idle machine
FORM = {"model": "tiny", "max_steps": STEPS, "logging_steps": 1, "save_steps": 4, "eval_steps": 4, "eval_samples": 2,
        "max_seq_length": 64, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 1, "warmup_steps": 0,
        "learning_rate": 0.001, "plots": False}
POINT = re.compile(r"step: (\d+); [^:]+: ([-\d.e]+); series: (.+)")  # a mark's label: x; y (its title); colour


@pytest.fixture(scope="module")
def studio(tiny_model_dir, tmp_path_factory):
    """The studio on a free localhost port, its working folder holding the tiny model and the fixture data."""
    require_browser()
    work = tmp_path_factory.mktemp("studio")
    shutil.copytree(tiny_model_dir, work / "tiny")
    shutil.copytree(FIXTURES, work / "data_finetune")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        page = StudioPage(work)
        app = build_studio(page, refresh_seconds=1.0)
        url, _ = launch(app, ChatConfig(port=free_port()))
        yield url, work, page
        app.close()
        deadline = time.monotonic() + 30  # a finished run's process may still be writing its last files
        while page.launcher.active is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        for job in page.launcher.jobs():  # a failed test must not leave a training behind
            page.launcher.cancel(job.run_name) or page.launcher.terminate(job.run_name)
        page.launcher.close()


@pytest.fixture(scope="module")
def browser():
    with chromium_driver() as driver:
        yield driver


def _fill(driver, name: str, value) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    if isinstance(value, bool):
        box = driver.find_element(By.CSS_SELECTOR, f"#form-{name} input[type=checkbox]")
        if box.is_selected() != value:
            box.click()
        return
    field = driver.find_element(By.CSS_SELECTOR, f"#form-{name} input, #form-{name} textarea")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.TAB)


def _text(driver, elem_id: str) -> str:
    return driver.execute_script(f"const e = document.getElementById('{elem_id}'); return e ? e.innerText : ''")


def _points(driver, elem_id: str) -> list[tuple[int, float, str]]:
    """The points the plot draws, from the marks' own accessible labels."""
    labels = driver.execute_script(f"return Array.from(document.querySelectorAll('#{elem_id} [aria-label]'))"
                                   ".map(e => e.getAttribute('aria-label'))")
    return sorted({(int(m[1]), float(m[2]), m[3]) for m in map(POINT.fullmatch, labels) if m})


def _click(driver, elem_id: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, elem_id).click()


def _status(driver, status: str, seconds: float = 60):
    return wait_until(driver, lambda d: f"status {status}" in _text(d, "run-summary"), seconds)


def test_start_watch_stop_resume_finish_and_compare_from_the_browser(studio, browser):
    url, work, page = studio
    browser.get(url)
    wait_until(browser, lambda d: _text(d, "train-command"))
    for name, value in {**FORM, "output_dir": "run-a"}.items():
        _fill(browser, name, value)
    wait_until(browser, lambda d: "-o run-a" in _text(d, "train-command"))
    shown = _text(browser, "train-command")
    assert "python train_script.py --model tiny -o run-a" in shown and f"--max-steps {STEPS}" in shown
    assert "--no-plots" in shown and str(work) not in shown
    _click(browser, "run-start")

    # The loss curve grows while it trains, read from what the plot draws. On an idle machine the tiny model trains
    # dozens of steps a second, so the trainer is frozen (SIGSTOP) between looks: it cannot finish before the test
    # has seen it grow, reloaded the page and pressed Stop; it meets the STOP file after its current step.
    _status(browser, "running")
    trainer = page.launcher.active.process
    first = wait_until(browser, lambda d: [p for p in _points(d, "plot-loss") if p[2] == "loss"], 60)
    trainer.send_signal(signal.SIGSTOP)
    try:
        first = wait_until(browser, lambda d: [p for p in _points(d, "plot-loss") if p[2] == "loss"], 10)
        trainer.send_signal(signal.SIGCONT)
        grown = wait_until(browser, lambda d: len([p for p in _points(d, "plot-loss") if p[2] == "loss"])
                           > len(first) + 1 and [p for p in _points(d, "plot-loss") if p[2] == "loss"], 60)
        trainer.send_signal(signal.SIGSTOP)
        assert {p[2] for p in _points(browser, "plot-loss")} >= {"loss", "loss (smoothed)", "validation loss"}
        assert [p[0] for p in grown] == sorted(p[0] for p in grown) and grown[-1][0] > first[-1][0]

        # A reload reattaches to the running run (state from disk, not from the browser).
        browser.get(url)
        wait_until(browser, lambda d: "run-a" in _text(d, "run-summary")
                   and "status running" in _text(d, "run-summary"), 30)
        _click(browser, "run-stop")
        wait_until(browser, lambda d: "stop" in _text(d, "train-message").lower(), 10)
    finally:
        trainer.send_signal(signal.SIGCONT)
    summary = _status(browser, "stopped", 60) and _text(browser, "run-summary")
    assert re.search(r"checkpoints: checkpoint-\d+", summary), summary
    stopped_at = page.run("run-a").step
    assert 0 < stopped_at < STEPS and "stopped" in _text(browser, "runs")

    _click(browser, "run-resume")
    wait_until(browser, lambda d: "resuming" in _text(d, "train-message"))
    # A second run queued from the form while the first trains: one run at a time on a CPU.
    for name, value in {**FORM, "output_dir": "run-b", "max_steps": 3}.items():  # the reload reset the form
        _fill(browser, name, value)
    wait_until(browser, lambda d: "-o run-b" in _text(d, "train-command"))
    _click(browser, "run-start")
    wait_until(browser, lambda d: "queued" in _text(d, "train-message"))
    wait_until(browser, lambda d: re.search(r"run-b\s+queued", _text(d, "runs")), 10)

    wait_until(browser, lambda d: "run-b" in _text(d, "run-summary"))
    runs_table = wait_until(browser, lambda d: "finished" in _text(d, "runs") and _text(d, "runs"), 180)
    assert re.search(r"run-a\s+finished", runs_table), runs_table
    wait_until(browser, lambda d: re.search(r"run-b\s+finished", _text(d, "runs")), 90)
    run_a = page.run("run-a")
    assert run_a.status == "finished" and run_a.step == STEPS and run_a.final is not None
    steps = [r["step"] for r in run_a.metrics() if r.get("kind") == "train"]
    assert steps == list(range(1, STEPS + 1))  # resumed where it stopped: no step lost or repeated

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _click(browser, "compare")
    picker = wait_until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#compared input"))
    for name in ("run-a", "run-b"):
        picker.send_keys(name)
        picker.send_keys(Keys.ENTER)
    compared = wait_until(browser, lambda d: {p[2] for p in _points(d, "plot-compare")} >= {
        "run-a: loss (smoothed)", "run-b: loss (smoothed)"} and _points(d, "plot-compare"), 30)
    assert max(p[0] for p in compared if p[2].startswith("run-a")) == STEPS
    assert max(p[0] for p in compared if p[2].startswith("run-b")) == 3
    assert "not evaluated" in _text(browser, "eval-reports")
