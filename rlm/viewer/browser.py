"""Headless Chromium for the viewer's tests and benchmark: the DOM after scripts ran, a
screenshot, and how long a page took to be ready."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rlm.errors import UsageError

NAMES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
          "--disable-default-apps", "--mute-audio", "--hide-scrollbars", "--disable-dev-shm-usage")


def find_chromium() -> str | None:
    """The path of a Chromium binary (``RLM_CHROMIUM`` first), or None."""
    for name in (os.environ.get("RLM_CHROMIUM"), *NAMES):
        found = shutil.which(name) if name else None
        if found:
            return found
    return None


def _run(args: list[str], timeout_s: float) -> tuple[str, float]:
    binary = find_chromium()
    if binary is None:
        raise UsageError("no Chromium found", hint="install it: apt-get install chromium (Debian)")
    with tempfile.TemporaryDirectory(prefix="rlm-chromium-") as profile:
        t0 = time.perf_counter()
        try:
            done = subprocess.run([binary, *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                                  text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise UsageError(f"Chromium did not finish in {timeout_s:.0f}s") from exc
        elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise UsageError(f"Chromium failed (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return done.stdout, elapsed


def page_url(page: Path, fragment: str = "") -> str:
    url = page.resolve().as_uri()
    return f"{url}#{fragment}" if fragment else url


def dump_dom(page: Path, *, fragment: str = "", timeout_s: float = 120) -> str:
    """The serialised DOM of ``page`` after its scripts ran."""
    return dump_dom_timed(page, fragment=fragment, timeout_s=timeout_s)[0]


def dump_dom_timed(page: Path, *, fragment: str = "", timeout_s: float = 120) -> tuple[str, float]:
    """The DOM and the wall time the Chromium process took (start-up included)."""
    return _run(["--dump-dom", page_url(page, fragment)], timeout_s)


def screenshot(page: Path, png: Path, *, width: int = 1280, height: int = 2000, timeout_s: float = 120) -> Path:
    """A PNG of the top of ``page``."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png.resolve()}", f"--window-size={width},{height}", page_url(page)], timeout_s)
    if not png.is_file():
        raise UsageError(f"Chromium wrote no screenshot at {png}")
    return png


__all__ = ["dump_dom", "dump_dom_timed", "find_chromium", "page_url", "screenshot"]
