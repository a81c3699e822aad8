"""A real browser for the web face's tests: Debian's Chromium, driven by Playwright.

Playwright for Python drives the *system* Chromium (``executable_path``); no browser
is downloaded (``.ci/run`` installs the Debian package ``chromium``). ``CHROMIUM``
in the environment names another executable.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def chromium_path() -> str | None:
    """The Chromium executable to drive, or ``None`` if there is none."""
    configured = os.environ.get("CHROMIUM")
    if configured:
        return configured
    if Path("/usr/bin/chromium").exists():
        return "/usr/bin/chromium"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_args() -> list[str]:
    """Chromium's flags here: no sandbox as root (Chromium refuses to start otherwise),
    and no GPU or shared-memory assumptions (containers, CI)."""
    args = ["--disable-gpu", "--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")
    return args
