"""Fixtures of the viewer tests: headless Chromium (a failure, not a skip, when CI=true)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from viewer_dom import Dom, parse_dom

from rlm.viewer.browser import dump_dom, find_chromium


@pytest.fixture(scope="session")
def chromium() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI", "").lower() not in ("", "0", "false"):
            pytest.fail("CI needs headless Chromium: apt-get install chromium (scripts/test installs it)")
        pytest.skip("no chromium (apt-get install chromium)")
    return found


@pytest.fixture
def browse(chromium):
    def go(page: Path, fragment: str = "") -> Dom:
        return parse_dom(dump_dom(page, fragment=fragment))

    return go
