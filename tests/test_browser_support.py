"""tests/browser_support.py: without chromium a browser test is skipped, but fails in CI (RHIZOME_REQUIRE_BROWSER=1),
where a missing browser must not pass unseen."""

import pytest

from tests import browser_support


@pytest.mark.parametrize("required, outcome", [("1", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_browser_skips_the_test_unless_ci_requires_it(monkeypatch, required, outcome):
    monkeypatch.setattr(browser_support, "CHROMEDRIVER", None)
    monkeypatch.setenv("RHIZOME_REQUIRE_BROWSER", required)
    with pytest.raises(outcome, match="apt-get install chromium chromium-driver"):
        with browser_support.chromium_driver():
            pass
