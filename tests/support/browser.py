"""Screenshots of pages served on 127.0.0.1, by Debian's headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

# Without the background-networking flags Chromium keeps trying hosts a closed network refuses.
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str | None:
    """The ``chromium`` binary, or None where it is not installed."""
    return shutil.which("chromium")


def screenshot(url: str, out: Path, *, width: int = 1400, height: int = 900, settle_ms: int = 20000) -> Path:
    """A ``width`` x ``height`` PNG of ``url`` at ``out``, taken once the page has had ``settle_ms``
    of virtual time (a single-page app loads its data in that time)."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        command = [
            binary,
            *OFFLINE_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={settle_ms}",
            f"--screenshot={out}",
            url,
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    return out
