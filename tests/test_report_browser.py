"""The HTML report in a real headless Chromium: renders, runs its script without console errors, loads
nothing from outside, shows the JSON's numbers, and its filter/sort work.

Chromium is driven over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (fds 3 and 4,
NUL-separated JSON messages), so the test needs no driver or client library beyond the standard
library. The whole test is bounded by one deadline.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from kmsadmin.report import from_input, write_html

FIXTURES = Path(__file__).parent / "fixtures" / "reports"
CHROMIUM = "/usr/bin/chromium"
DEADLINE_S = 30.0
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-pipe",
    "--window-size=1280,900",
)


class Browser:
    """A headless Chromium and one page, spoken to over the DevTools pipe."""

    def __init__(self, profile: Path, deadline: float) -> None:
        self.deadline = deadline
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()
        # Move the child's ends above 3 and 4 first, so the dup2 below cannot overwrite one with the other.
        child_in = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        actions = [
            (os.POSIX_SPAWN_DUP2, child_in, 3),
            (os.POSIX_SPAWN_DUP2, child_out, 4),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0),
        ]
        argv = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.pid = os.posix_spawn(
            CHROMIUM, argv, {**os.environ, "HOME": str(profile)}, file_actions=actions, setsid=True
        )
        os.close(child_in)
        os.close(child_out)
        self._write_fd = to_chrome_w
        self._read_fd = from_chrome_r
        self.session: str | None = None

    def _remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the browser test ran past its deadline")
        return left

    def _read_message(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read_fd], [], [], self._remaining())
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, browser: bool = False
    ) -> dict[str, Any]:
        """Send one command and wait for its answer, keeping the events that arrive meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session and not browser:
            message["sessionId"] = self.session
        os.write(self._write_fd, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read_message()
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
            if "method" in answer:
                self.events.append(answer)

    def wait_for(self, method: str) -> dict[str, Any]:
        """Wait for an event (or find it among those already received)."""
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = self._read_message()
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def open_page(self) -> None:
        """Create a page, attach to it and turn on the domains the test listens to."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, browser=True)
        attached = self.call(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, browser=True
        )
        self.session = attached["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(domain)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        )

    def navigate(self, url: str) -> None:
        """Load a URL and wait for its load event."""
        self.events = [event for event in self.events if event["method"] != "Page.loadEventFired"]
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Run JavaScript in the page and return its JSON value."""
        result = self.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self) -> bytes:
        """A PNG of the whole page."""
        metrics = self.call("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": min(size["height"], 8000),
                    "scale": 1,
                },
            },
        )
        return base64.b64decode(shot["data"])

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions, blocked or failed loads, and any dialog a script opened."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Page.javascriptDialogOpening":
                found.append(f"dialog: {params.get('message')}")
        return found

    def close(self) -> None:
        """Close the browser; kill it if it does not go."""
        try:
            if self.deadline - time.monotonic() > 0:
                self.call("Browser.close", browser=True)
        except (RuntimeError, TimeoutError, OSError):
            pass
        finally:
            for fd in (self._write_fd, self._read_fd):
                os.close(fd)
            end = time.monotonic() + 5
            while time.monotonic() < end:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    break
                time.sleep(0.05)
            else:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)


METRICS_JS = """JSON.stringify(Array.from(document.querySelectorAll('[data-metric]')).map(function (el) {
  var value = el.getAttribute('data-value');
  return [el.getAttribute('data-metric'), value === null ? el.textContent : value];
}))"""


def _resolve(report: dict[str, Any], pointer: str) -> Any:
    value: Any = report
    for part in pointer.split("/")[1:]:
        key = part.replace("~1", "/").replace("~0", "~")
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value


def test_html_report_in_headless_chromium(tmp_path: Path) -> None:
    assert Path(CHROMIUM).exists() or shutil.which("chromium"), (
        "Chromium is missing: install Debian's chromium (apt-get install -y chromium chromium-driver); "
        ".ci/run installs it"
    )
    started = time.monotonic()
    report = from_input(json.loads((FIXTURES / "rollout-fleet.json").read_text(encoding="utf-8")))
    page = write_html(report, tmp_path / "report.html")
    hostile_input = json.loads((FIXTURES / "rollout-fleet.json").read_text(encoding="utf-8"))
    hostile_input["hosts"] = hostile_input["hosts"][:5]
    hostile_input["hosts"][0]["host"] = "<script>alert(1)</script>"
    hostile_input["hosts"][1]["state"]["edition"] = "<img src=x onerror=alert(2)>"
    hostile_input["not_started"] = ['"><svg onload=alert(3)>']
    hostile = write_html(from_input(hostile_input), tmp_path / "hostile.html")

    browser = Browser(tmp_path / "profile", started + DEADLINE_S)
    try:
        browser.open_page()
        browser.navigate(page.as_uri())
        assert browser.evaluate("document.title") == "kmsadmin rollout report: playbooks/convert-fleet.yml"

        shown = json.loads(browser.evaluate(METRICS_JS))
        assert len(shown) > 40
        for pointer, text in shown:
            assert str(_resolve(report, pointer)) == text, pointer
        summary = report["summary"]
        pointers = {pointer for pointer, _ in shown}
        for key in ("hosts", "ok", "changed", "pending", "waiting", "failed", "not_started", "activated"):
            assert f"/summary/{key}" in pointers
        assert (
            browser.evaluate("document.querySelectorAll('#host-table tbody tr').length") == summary["hosts"]
        )
        assert (
            browser.evaluate("document.querySelectorAll('#failure-table tbody tr').length")
            == summary["failed"]
        )
        assert (
            browser.evaluate("document.querySelectorAll('#waiting-table tbody tr').length")
            == summary["waiting"]
            > 0
        )
        assert browser.evaluate("document.querySelectorAll('svg rect[data-metric]').length") > 10

        # The filter and the sort work (the page's own script ran).
        browser.evaluate(
            "var s = document.getElementById('status-filter'); s.value = 'failed';"
            "s.dispatchEvent(new Event('change')); 0"
        )
        assert browser.evaluate("document.getElementById('shown-count').textContent") == str(
            summary["failed"]
        )
        visible = browser.evaluate(
            "Array.from(document.querySelectorAll('#host-table tbody tr'))"
            ".filter(function (r) { return !r.hidden; }).length"
        )
        assert visible == summary["failed"]
        browser.evaluate(
            "var s = document.getElementById('status-filter'); s.value = 'waiting';"
            "s.dispatchEvent(new Event('change')); 0"
        )
        assert browser.evaluate("document.getElementById('shown-count').textContent") == str(
            summary["waiting"]
        )
        browser.evaluate(
            "var s = document.getElementById('status-filter'); s.value = '';"
            "s.dispatchEvent(new Event('change'));"
            "var f = document.getElementById('host-filter'); f.value = 'srv01';"
            "f.dispatchEvent(new Event('input')); 0"
        )
        expected = sum(1 for host in report["hosts"] if "srv01" in host["host"])
        assert browser.evaluate("document.getElementById('shown-count').textContent") == str(expected)
        browser.evaluate(
            "document.getElementById('host-filter').value = '';"
            "document.getElementById('host-filter').dispatchEvent(new Event('input'));"
            "document.querySelectorAll('#host-table thead button')[7].click();"
            "document.querySelectorAll('#host-table thead button')[7].click(); 0"
        )
        first_days = browser.evaluate("document.querySelector('#host-table tbody tr').cells[7].textContent")
        assert first_days == str(max(h["state"]["days_left"] for h in report["hosts"] if h["state"]))

        browser.evaluate("window.scrollTo(0, 0); 0")
        png = browser.screenshot()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
        (tmp_path / "report.png").write_bytes(png)

        browser.navigate(hostile.as_uri())
        assert browser.evaluate("document.querySelectorAll('script').length") == 1
        assert browser.evaluate("document.querySelector('#host-table tbody tr td').textContent") == (
            "<script>alert(1)</script>"
        )
        (tmp_path / "hostile.png").write_bytes(browser.screenshot())
        assert browser.problems() == []
    finally:
        browser.close()
    assert time.monotonic() - started < DEADLINE_S
