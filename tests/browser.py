"""The system's chromium for the browser tests (Debian's package; Playwright's own browser
download does not work here)."""

from __future__ import annotations

import os
import shutil

import pytest


def chromium_path() -> str:
    """Path of Debian's ``chromium``; skips the test, with the reason, when it is not
    installed, unless ``SETTINGS_REQUIRE_BROWSER=1`` (CI) makes that a failure."""
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("SETTINGS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
