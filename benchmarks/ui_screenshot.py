"""Screenshot of the ``report`` asset's plots rendered inside the Dagster UI.

A tool, not a test: it proves that the ``plots`` metadata entry of ``report`` (every PNG as a
Markdown ``![name](data:image/png;base64,...)`` image, catret_pipeline/reporting/assets.py)
shows in the UI itself. Run from the repository root against a data dir where ``report`` has
been materialised::

    python3 -m uv run --frozen python benchmarks/ui_screenshot.py --data-dir /tmp/uidev
    python3 -m uv run --frozen python benchmarks/ui_screenshot.py --data-dir DIR --out shot.png

It starts ``catret ui --data-dir DIR`` on a free port, waits for ``/server_info``, drives
headless Chromium over the DevTools protocol to ``/assets/report``, skips the "Join the Dagster
community" modal, opens the ``plots`` entry's Markdown dialog, waits until its ``data:image/png``
images have loaded and saves a screenshot (``--out``, default
docs/images/report_plots_in_dagster_ui.png). It prints how many inline images rendered and exits
non-zero when none did. The UI and Chromium are always stopped; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from websockets.sync.client import connect

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "docs" / "images" / "report_plots_in_dagster_ui.png"
HOST = "127.0.0.1"

# Clicks the community modal's "Skip" button when it is there; returns whether it clicked.
JS_SKIP_MODAL = """
(() => {
  const b = [...document.querySelectorAll('button')]
    .find((e) => e.textContent.trim() === 'Skip');
  if (b) { b.click(); return true; }
  return false;
})()
"""

# Finds the metadata row whose label is exactly `plots` and clicks the button in it
# (Dagster shows Markdown metadata as a "[Show Markdown]" button that opens a dialog).
# Returns the button's text, or "" when the row or its button is not there yet.
JS_OPEN_PLOTS = """
(() => {
  for (const row of document.querySelectorAll('tr')) {
    const cells = [...row.querySelectorAll('td')];
    if (!cells.length || cells[0].textContent.trim() !== 'plots') continue;
    const b = cells.slice(1).flatMap((c) => [...c.querySelectorAll('button, a, [role="button"]')])
      .find((e) => /show markdown/i.test(e.textContent));
    if (b) { b.scrollIntoView(); b.click(); return b.textContent.trim(); }
  }
  return '';
})()
"""

# Whether the metadata table has its `plots` row yet (the page has loaded).
JS_HAS_PLOTS_ROW = """
[...document.querySelectorAll('tr')]
  .some((r) => r.querySelector('td')?.textContent.trim() === 'plots')
"""

# Inline PNGs inside an open dialog: how many, and how many have loaded.
JS_IMAGES = """
(() => {
  const scope = document.querySelector('[role="dialog"], .bp5-dialog, .bp4-dialog') || document;
  const imgs = [...scope.querySelectorAll('img[src^="data:image/png"]')];
  return JSON.stringify({
    total: imgs.length,
    loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length,
    sizes: imgs.map((i) => [i.naturalWidth, i.naturalHeight]),
    dialog: scope !== document,
  });
})()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (127.0.0.1 only)
        return resp.read()


def wait_http(url: str, timeout: float, proc: subprocess.Popen, what: str) -> bytes:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before {url} answered")
        try:
            return http_get(url)
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            time.sleep(1.0)
    raise TimeoutError(f"{what}: no answer from {url} within {timeout:.0f}s")


def stop(proc: subprocess.Popen | None, name: str, timeout: float = 20.0) -> None:
    """Stop ``proc`` and what it started: it runs in its own session, so its process group is
    exactly ours to end. SIGTERM, a bounded wait, then SIGKILL for whatever is left (dagster
    dev's webserver, daemon and code server included)."""
    if proc is None:
        return

    def signal_group(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    signal_group(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} did not stop within {timeout:.0f}s; killing it", file=sys.stderr)
    signal_group(signal.SIGKILL)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} (pid {proc.pid}) is still running", file=sys.stderr)


class DevTools:
    """A minimal Chrome DevTools protocol client over one page target's websocket."""

    def __init__(self, ws, timeout: float):
        self.ws = ws
        self.timeout = timeout
        self.next_id = 0

    def call(self, method: str, params: dict | None = None, timeout: float | None = None):
        self.next_id += 1
        msg_id = self.next_id
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools {method}: no reply")
            reply = json.loads(self.ws.recv(timeout=left))
            if reply.get("id") != msg_id:
                continue  # an event
            if "error" in reply:
                raise RuntimeError(f"DevTools {method}: {reply['error']}")
            return reply.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error: {result['exceptionDetails']}")
        return result["result"].get("value")


def poll(fn, timeout: float, interval: float = 0.5):
    """``fn()`` until it returns something truthy; the last value when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value


def catret_command() -> list[str]:
    exe = shutil.which("catret", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "catret_pipeline.cli"]


def take_screenshot(args: argparse.Namespace, ui_port: int, log) -> int:
    """Start Chromium and drive it against the running UI; the number of loaded inline images."""
    chromium = shutil.which(args.chromium) or args.chromium
    cdp_port = free_port()
    profile = tempfile.mkdtemp(prefix="catret-chromium-")
    browser = None
    try:
        browser = subprocess.Popen(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                f"--remote-debugging-address={HOST}",
                f"--remote-debugging-port={cdp_port}",
                f"--window-size={args.width},{args.height}",
                "about:blank",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        targets = json.loads(
            wait_http(f"http://{HOST}:{cdp_port}/json", args.browser_timeout, browser, "chromium")
        )
        page = next(t for t in targets if t.get("type") == "page")
        with connect(
            page["webSocketDebuggerUrl"], max_size=None, open_timeout=args.step_timeout
        ) as ws:
            return drive(DevTools(ws, timeout=args.step_timeout), args, ui_port)
    finally:
        stop(browser, "chromium", timeout=10.0)
        shutil.rmtree(profile, ignore_errors=True)


def drive(cdp: DevTools, args: argparse.Namespace, ui_port: int) -> int:
    cdp.call("Page.enable")
    cdp.call("Runtime.enable")
    # The exact viewport asked for (the headless window's viewport is smaller than the window).
    cdp.call(
        "Emulation.setDeviceMetricsOverride",
        {"width": args.width, "height": args.height, "deviceScaleFactor": 1, "mobile": False},
    )
    url = f"http://{HOST}:{ui_port}/assets/report"
    cdp.call("Page.navigate", {"url": url})
    print(f"opened {url}")

    if not poll(lambda: cdp.evaluate(JS_HAS_PLOTS_ROW), timeout=args.step_timeout):
        print("no `plots` metadata row on the page", file=sys.stderr)
        save_screenshot(cdp, args.out)
        return 0
    # The community modal comes with the first page of an instance that has not dismissed it
    # yet (Dagster remembers "Skip" in the instance's storage); clicks would land on its overlay.
    if poll(lambda: cdp.evaluate(JS_SKIP_MODAL), timeout=args.modal_wait):
        print('dismissed the "Join the Dagster community" modal')
        time.sleep(0.5)
    else:
        print(
            f"no community modal within {args.modal_wait:.0f}s (dismissed on this instance before)"
        )

    clicked = cdp.evaluate(JS_OPEN_PLOTS)
    if not clicked:
        print("the `plots` metadata row has no Markdown button", file=sys.stderr)
        save_screenshot(cdp, args.out)
        return 0
    print(f"clicked {clicked!r} on the `plots` metadata row")

    def images_loaded():
        state = json.loads(cdp.evaluate(JS_IMAGES))
        return state if state["total"] and state["loaded"] == state["total"] else None

    state = poll(images_loaded, timeout=args.step_timeout) or json.loads(cdp.evaluate(JS_IMAGES))
    print(
        f"inline images: {state['loaded']} of {state['total']} loaded "
        f"(natural sizes {state['sizes']}; in a dialog: {state['dialog']})"
    )
    time.sleep(1.0)  # let the dialog's open animation finish
    save_screenshot(cdp, args.out)
    return state["loaded"]


def save_screenshot(cdp: DevTools, out: Path) -> None:
    shot = cdp.call("Page.captureScreenshot", {"format": "png"})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {out} ({out.stat().st_size / 1024:.0f} KiB)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", required=True, help="data dir where `report` is materialised")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="screenshot path (PNG)")
    ap.add_argument("--port", type=int, default=0, help="UI port (default: a free one)")
    ap.add_argument("--chromium", default="chromium", help="Chromium executable")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1800)
    ap.add_argument("--ui-timeout", type=float, default=240.0, help="seconds for the UI to start")
    ap.add_argument("--browser-timeout", type=float, default=60.0)
    ap.add_argument("--step-timeout", type=float, default=60.0, help="seconds per page step")
    ap.add_argument("--modal-wait", type=float, default=8.0, help="seconds to wait for the modal")
    ap.add_argument("--log", type=Path, help="UI and Chromium output (default: a temp file)")
    args = ap.parse_args(argv)
    args.out = args.out.resolve()

    data_dir = Path(args.data_dir).resolve()
    if not data_dir.is_dir():
        print(f"no data dir at {data_dir}", file=sys.stderr)
        return 2
    port = args.port or free_port()
    env = dict(os.environ, DAGSTER_DISABLE_TELEMETRY="1")
    log_path = args.log or Path(tempfile.mkstemp(prefix="catret-ui-", suffix=".log")[1])
    ui = None
    with open(log_path, "ab") as log:
        try:
            cmd = [*catret_command(), "ui", "--data-dir", str(data_dir)]
            cmd += ["--host", HOST, "--port", str(port)]
            ui = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=log, start_new_session=True
            )
            print(f"started: {' '.join(cmd)} (log: {log_path})")
            t0 = time.monotonic()
            wait_http(f"http://{HOST}:{port}/server_info", args.ui_timeout, ui, "catret ui")
            print(f"UI answered /server_info after {time.monotonic() - t0:.0f}s")
            loaded = take_screenshot(args, port, log)
        except Exception as exc:  # noqa: BLE001 (reported, then non-zero)
            print(f"failed: {type(exc).__name__}: {exc} (log: {log_path})", file=sys.stderr)
            loaded = 0
        finally:
            stop(ui, "catret ui")
    print(f"{loaded} inline plot image(s) rendered in the Dagster UI")
    return 0 if loaded else 1


if __name__ == "__main__":
    sys.exit(main())
