"""The QC report in a real headless Chromium, driven over the Chrome DevTools Protocol.

A QC folder with three entries is written by `lesionseg qc` from real SCT images; the page is
opened from disk (file://) and driven with real key presses and clicks. CDP travels over
`--remote-debugging-pipe` (file descriptors 3 and 4, NUL-separated JSON): no debugging port and
no websocket, so the browser opens no network address at all; host resolution and any proxy are
pointed at nothing, and every request the page makes is checked to be file: or data:.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT, SHARED
from waiting import wait_for

from lesionseg.client.cli import main

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

DATA = SHARED / "sct_testing_data"
ARTIFACTS = ROOT / "test-artifacts"
VIEWPORT = (1400, 1000)


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Cdp:
    """A minimal CDP client over Chromium's --remote-debugging-pipe (we write fd 3, read fd 4)."""

    def __init__(self, to_browser: int, from_browser: int) -> None:
        self._out, self._in = to_browser, from_browser
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, *, session: str | None = None, timeout: float = 30.0) -> dict:
        self._next_id += 1
        message: dict = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._out, data):]
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline, f"reply to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def _receive(self, deadline: float, what: str) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError(f"Chromium sent no {what}")
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise ConnectionError(f"Chromium closed the DevTools pipe while waiting for {what}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)


class Page:
    """One tab attached in flat session mode, with the domains this test listens to enabled."""

    def __init__(self, cdp: Cdp) -> None:
        self.cdp = cdp
        self.target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = cdp.send("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": VIEWPORT[0], "height": VIEWPORT[1], "deviceScaleFactor": 1, "mobile": False})

    def call(self, method: str, params: dict | None = None) -> dict:
        return self.cdp.send(method, params, session=self.session)

    def load(self, url: str | None = None, *, timeout: float = 30.0) -> None:
        """Navigate (or reload) and wait until the NEW document has fired its load event.

        Load events alone are ambiguous (the initial about:blank fires one late), so the old
        document is tagged and the new one is polled for until it is untagged and complete."""
        self.js("window.__lesionsegOld = true")
        if url is None:
            self.call("Page.reload", {"ignoreCache": True})
        else:
            self.call("Page.navigate", {"url": url})

        def loaded() -> bool:
            try:
                state = self.call("Runtime.evaluate", {"expression": "[window.__lesionsegOld === true, document.readyState]",
                                                       "returnByValue": True})
            except RuntimeError:  # the context went away mid-navigation
                state = {}
            return state.get("result", {}).get("value") == [False, "complete"]

        wait_for(loaded, timeout, f"the page to load {url or 'again'}", interval=0.05)

    def close(self) -> None:
        self.cdp.send("Target.closeTarget", {"targetId": self.target})

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def key(self, key: str) -> None:
        """A real key press: keyDown (with text for printable keys, so keypress fires too) and keyUp."""
        named = {"ArrowDown": ("ArrowDown", 40), "ArrowUp": ("ArrowUp", 38), " ": ("Space", 32)}
        if key in named:
            code, vk = named[key]
        else:
            code, vk = (f"Key{key.upper()}" if key.isalpha() else f"Digit{key}"), ord(key.upper())
        down = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk}
        if len(key) == 1:
            down["text"] = key
        self.call("Input.dispatchKeyEvent", down)
        self.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk})

    def click(self, selector: str) -> None:
        x, y = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                       " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def settle(self) -> None:
        """Wait until both images of the current entry are loaded and decoded, and a frame is drawn."""
        self.js("(async () => { for (const id of ['background', 'overlay']) await document.getElementById(id).decode();"
                " await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); })()")

    def screenshot(self, selector: str | None = None) -> bytes:
        self.settle()
        params: dict = {"format": "png"}
        if selector:
            box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                          " return {x: r.x, y: r.y, width: r.width, height: r.height}; })()")
            params["clip"] = {**box, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params)["data"])

    def colour_counts(self, png: bytes) -> dict:
        """Pixels of a screenshot that are lesion red or (blended) cord cyan, decoded by the browser."""
        data = base64.b64encode(png).decode()
        return self.js(f"""(async () => {{
            const img = new Image(); img.src = "data:image/png;base64,{data}"; await img.decode();
            const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
            const g = c.getContext("2d"); g.drawImage(img, 0, 0);
            const d = g.getImageData(0, 0, c.width, c.height).data; let red = 0, cyan = 0;
            for (let i = 0; i < d.length; i += 4) {{
              if (d[i] > 200 && d[i + 1] < 60 && d[i + 2] < 60) red++;
              if (d[i] < 100 && d[i + 1] > 150 && Math.abs(d[i + 1] - d[i + 2]) < 12) cyan++;
            }}
            return {{red, cyan}}; }})()""")

    def errors(self) -> list[str]:
        """Console errors, log entries of level error and uncaught exceptions seen so far."""
        found = []
        for event in self.cdp.events:
            if event.get("sessionId") != self.session:
                continue
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params.get("args", [])))
            elif event["method"] == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif event["method"] == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                found.append("exception: " + str(details.get("exception", {}).get("description", details.get("text"))))
        return found

    def request_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.cdp.events
                if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == self.session]


@pytest.fixture(scope="module")
def qc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three entries from real SCT images: cord only (axial), cord + lesion (axial), cord (sagittal)."""
    if not (DATA / "t2" / "t2.nii.gz").is_file():
        pytest.skip(f"SCT testing data not found at {DATA} (set LESIONSEG_SHARED)")
    out = tmp_path_factory.mktemp("qc")
    t2, t2s = DATA / "t2", DATA / "t2s"
    runs = [
        ["-i", t2 / "t2.nii.gz", "-s", t2 / "t2_seg-manual.nii.gz", "--subject", "sub-01"],
        ["-i", t2 / "t2_fake_lesion.nii.gz", "-s", t2 / "t2_fake_lesion_sc_seg.nii.gz",
         "-l", t2 / "t2_fake_lesion_lesion_seg.nii.gz", "--subject", "sub-02"],
        ["-i", t2s / "t2s.nii.gz", "-s", t2s / "t2s_seg.nii.gz", "-p", "sagittal", "--subject", "sub-03"],
    ]
    for args in runs:
        assert main(["qc", "-qc", str(out), "--dataset", "sct", *map(str, args)]) == 0
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdp]:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()

    def wire_pipes() -> None:  # in the child: its fd 3 reads our commands, its fd 4 writes replies
        high_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
        os.dup2(high_r, 3)
        os.dup2(high_w, 4)

    command = [
        binary, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
        "--remote-debugging-pipe", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-default-apps",
        "--disable-domain-reliability", "--no-pings", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9", f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "about:blank",
    ]
    log = open(profile.parent / "chromium.log", "wb")
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(3, 4),
                               preexec_fn=wire_pipes, start_new_session=True)
    os.close(to_browser_r)
    os.close(from_browser_w)
    try:
        cdp = Cdp(to_browser_w, from_browser_r)
        cdp.send("Browser.getVersion", timeout=60)  # the browser is up and answering
        yield cdp
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)  # the group we started: browser, zygote, renderers
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        os.close(to_browser_w)
        os.close(from_browser_r)
        log.close()


@pytest.fixture()
def page(browser: Cdp, qc_dir: Path) -> Iterator[Page]:
    """The QC index, loaded fresh with no marks stored; its console must stay free of errors."""
    tab = Page(browser)
    tab.load((qc_dir / "index.html").as_uri())
    tab.js("localStorage.clear()")
    tab.load()
    try:
        yield tab
        assert tab.errors() == []
        assert [u for u in tab.request_urls() if not u.startswith(("file:", "data:"))] == []
    finally:
        tab.close()


def selected(page: Page) -> int:
    return page.js("[...document.querySelectorAll('#rows tr')].findIndex(tr => tr.className === 'sel')")


def test_error_detection_sees_console_errors_and_exceptions(browser: Cdp) -> None:
    """The no-error assertions of the other tests would catch real errors: probe them once."""
    tab = Page(browser)
    try:
        tab.load("data:text/html,<p>probe</p>")
        tab.js("console.error('probe-console'); setTimeout(() => { throw new Error('probe-throw'); }, 0); 1")
        tab.js("new Promise(r => setTimeout(r, 100))")  # the timer has thrown once this returns
        found = " | ".join(tab.errors())
        assert "probe-console" in found and "probe-throw" in found
    finally:
        tab.close()


def test_page_lists_every_entry_and_loads_every_image(page: Page, qc_dir: Path) -> None:
    rows = page.js("[...document.querySelectorAll('#rows tr')].map(tr => [...tr.children].map(td => td.textContent))")
    assert [r[2] for r in rows] == ["sub-01", "sub-02", "sub-03"]
    assert all(r[1] == "sct" and r[4] == "qc" for r in rows)
    assert rows[1][6] == "1 (83.5 mm\u00b3)" and rows[0][6] == "" and rows[2][6] == ""  # lesion column
    for index in range(3):
        page.settle()
        sizes = page.js("(() => { const b = document.getElementById('background'), o = document.getElementById('overlay');"
                        " return [b.naturalWidth, b.naturalHeight, o.naturalWidth, o.naturalHeight]; })()")
        assert sizes[0] > 0 and sizes[1] > 0 and sizes[:2] == sizes[2:]  # both images load, same size
        page.key("ArrowDown")
    assert page.js("document.getElementById('title').textContent") == "3/3  sub-03 t2s qc (Sagittal)"


def test_lesion_statistics_are_shown_for_the_entry_that_has_them(page: Page, qc_dir: Path) -> None:
    assert page.js("document.getElementById('lesions').hidden") is True  # sub-01: no lesion mask
    page.key("ArrowDown")
    assert page.js("document.getElementById('lesions').hidden") is False
    summary = page.js("document.getElementById('lesion-summary').textContent")
    assert summary == "1 lesion, total 83.5 mm\u00b3"
    note = page.js("document.getElementById('lesion-note').textContent")
    assert note.startswith("163 voxels of 0.80x0.80x0.80 mm, 26-connected") and note.endswith("(toward P/S/R)")
    cells = page.js("[...document.querySelectorAll('#lesion-rows tr')].map(tr => [...tr.children].map(td => td.textContent))")
    assert len(cells) == 1 and cells[0][:3] == ["1", "163", "83.5"]
    links = page.js("[...document.querySelectorAll('#attachments a')].map(a => [a.textContent, a.getAttribute('href')])")
    assert [name for name, _ in links] == ["t2_fake_lesion_lesion_seg_lesions.tsv", "t2_fake_lesion_lesion_seg_lesions.json"]
    tsv = (qc_dir / links[0][1]).read_text().splitlines()  # the links point at the entry's sidecars
    assert tsv[1].startswith("1\t163\t83.456\t")
    page.key("ArrowDown")
    assert page.js("document.getElementById('lesions').hidden") is True


def test_overlay_toggle_changes_the_displayed_image(page: Page) -> None:
    page.key("ArrowDown")  # sub-02: cord and lesion
    shown = page.screenshot("#stack")
    colours = page.colour_counts(shown)
    assert colours["red"] > 0 and colours["cyan"] > 0
    page.click("#toggle")
    assert page.js("getComputedStyle(document.getElementById('overlay')).display") == "none"
    hidden = page.screenshot("#stack")
    assert hidden != shown and page.colour_counts(hidden) == {"red": 0, "cyan": 0}
    page.key("t")
    assert page.js("getComputedStyle(document.getElementById('overlay')).display") == "block"
    assert page.screenshot("#stack") == shown


def test_keyboard_moves_the_selection(page: Page) -> None:
    title = lambda: page.js("document.getElementById('title').textContent")  # noqa: E731
    assert selected(page) == 0 and title().startswith("1/3")
    for key, expected in (("ArrowDown", 1), ("j", 2), ("ArrowDown", 2), ("k", 1), ("ArrowUp", 0), ("ArrowUp", 0)):
        page.key(key)
        assert selected(page) == expected, key
        assert title().startswith(f"{expected + 1}/3"), key


@pytest.fixture()
def served_page(browser: Cdp, qc_dir: Path) -> Iterator[Page]:
    """The QC index served over loopback HTTP, fresh; its console must stay free of errors."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
            pass

    handler = functools.partial(Quiet, directory=str(qc_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tab = Page(browser)
    try:
        tab.load(f"http://127.0.0.1:{server.server_address[1]}/index.html")
        yield tab
        assert tab.errors() == []
    finally:
        tab.close()
        server.shutdown()
        server.server_close()


def test_marks_persist_in_local_storage(served_page: Page, qc_dir: Path) -> None:
    """Marks survive a reload (localStorage). Served over loopback HTTP: headless Chromium loses a
    file:// page's localStorage writes across a reload now and then (measured: a few runs in a
    hundred), which is not the page's logic."""
    page = served_page
    page.key("j")
    page.key("f")  # sub-02 passes
    page.key("j")
    page.key("x")  # sub-03 fails
    marks = lambda: page.js("[...document.querySelectorAll('#rows tr')].map(tr => tr.lastChild.textContent)")  # noqa: E731
    assert marks() == ["", "\u2713 pass", "\u2717 fail"]
    page.load()  # a reload keeps them
    assert marks() == ["", "\u2713 pass", "\u2717 fail"]
    stored = page.js("localStorage.getItem('lesionseg-qc-marks:' + location.pathname)")
    entries = json.loads((qc_dir / "index.html").read_text().split("const ENTRIES = ", 1)[1].split(";\n", 1)[0])
    assert json.loads(stored) == {entries[1]["background_img"]: "pass", entries[2]["background_img"]: "fail"}
    page.key("j")
    page.key("0")  # the reload reset the selection to the first entry: this clears sub-02's mark
    page.load()
    assert marks() == ["", "", "\u2717 fail"]


def test_screenshot_of_the_page(page: Page) -> None:
    page.key("j")  # the entry with a lesion, overlay on
    png = page.screenshot()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and page.colour_counts(png)["red"] > 0
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "qc_index.png").write_bytes(png)
