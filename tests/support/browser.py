"""Headless Chromium for the dashboard test: find it, load a page, dump it.

``scripts/test.sh`` installs Debian's ``chromium`` when it is missing and
the script runs as root (``scripts/browser.sh``); `find_chromium` says why
when there is none, for the test's skip message.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

__all__ = ["find_chromium", "dump_dom", "screenshot", "FLAGS"]

CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser")
#: Flags of every run: no sandbox (tests run as root), nothing fetched from
#: the network but the page under test.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_chromium() -> tuple[str | None, str]:
    """(path, "") of a Chromium binary, or (None, why there is none)."""
    for name in CANDIDATES:
        path = name if os.path.isabs(name) else shutil.which(name)
        if path and os.access(path, os.X_OK):
            return path, ""
    how = (
        "run scripts/test.sh as root (it installs Debian's chromium) or apt-get install chromium"
        if os.geteuid() != 0
        else "apt-get install -y chromium (scripts/browser.sh) did not provide it"
    )
    return None, f"no Chromium found ({', '.join(CANDIDATES)}): {how}"


def _run(binary: str, profile: Path, url: str, budget_ms: int, extra: list[str], timeout: float):
    """Chromium in its own process group, all of it killed if it overruns."""
    cmd = [binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    proc = subprocess.Popen(
        [*cmd, *extra, url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def dump_dom(
    binary: str, profile: Path, url: str, budget_ms: int = 6000, timeout: float = 120
) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (scripts run).
    Virtual time stands still while a request is open, so the page must
    not hold one (the dashboard's ``?live=0``)."""
    out = _run(binary, profile, url, budget_ms, ["--dump-dom"], timeout)
    if out.returncode != 0 or not out.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({out.returncode}): {out.stderr[-2000:]}")
    return out.stdout


def screenshot(
    binary: str, profile: Path, url: str, path: Path, budget_ms: int = 6000, timeout: float = 120
) -> Path:
    """A PNG of ``url`` (1400 x 1000) after ``budget_ms`` of virtual time."""
    out = _run(
        binary,
        profile,
        url,
        budget_ms,
        [f"--screenshot={path}", "--window-size=1400,1000", "--hide-scrollbars"],
        timeout,
    )
    if not path.exists():
        raise RuntimeError(f"chromium --screenshot failed ({out.returncode}): {out.stderr[-2000:]}")
    return path
