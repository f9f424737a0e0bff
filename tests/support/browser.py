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

__all__ = ["find_chromium", "dump_dom", "screenshot", "PageSession", "FLAGS"]

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
    binary: str,
    profile: Path,
    url: str,
    path: Path,
    budget_ms: int = 6000,
    timeout: float = 120,
    size: tuple[int, int] = (1400, 1000),
) -> Path:
    """A PNG of ``url`` (``size``: width, height) after ``budget_ms`` of virtual time."""
    out = _run(
        binary,
        profile,
        url,
        budget_ms,
        [f"--screenshot={path}", f"--window-size={size[0]},{size[1]}", "--hide-scrollbars"],
        timeout,
    )
    if not path.exists():
        raise RuntimeError(f"chromium --screenshot failed ({out.returncode}): {out.stderr[-2000:]}")
    return path


class PageSession:
    """A live page in headless Chromium, driven over the DevTools protocol
    on a pipe (``--remote-debugging-pipe``: fd 3 in, fd 4 out, JSON
    messages ended by NUL), for what a still dump cannot show: a page that
    keeps a stream open.  Use as a context manager; `evaluate` returns the
    value of a JavaScript expression in the page."""

    def __init__(self, binary: str, profile: Path, timeout: float = 30.0):
        self.timeout = timeout
        to_child, self._w = os.pipe()
        self._r, from_child = os.pipe()

        def fds() -> None:  # in the child: the pipes as fds 3 and 4
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        self.proc = subprocess.Popen(
            [
                binary,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=fds,
            start_new_session=True,
        )
        os.close(to_child)
        os.close(from_child)
        self._buf = b""
        self._id = 0
        self._session: str | None = None

    def __enter__(self) -> PageSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        for fd in (self._w, self._r):
            try:
                os.close(fd)
            except OSError:
                pass

    def _call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        import json
        import select
        import time

        self._id += 1
        msg: dict = {"id": self._id, "method": method, "params": params or {}}
        if session and self._session is not None:
            msg["sessionId"] = self._session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError(f"no reply to {method} within {self.timeout} s")
            chunk = os.read(self._r, 1 << 16)
            if not chunk:
                raise RuntimeError(f"chromium closed its pipe during {method}")
            self._buf += chunk

    def open(self, url: str) -> None:
        """Attach to the browser's page and navigate it to ``url``."""
        targets = self._call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        got = self._call(
            "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}, session=False
        )
        self._session = got["sessionId"]
        self._call("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        got = self._call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return got["result"].get("value")
