"""`orpo-tui serve-web`: the real server as a subprocess, each tab's real app behind it.

The browser test drives the system's Chromium (Debian: `apt-get install chromium`) through
playwright, reads the terminal's text from xterm.js's buffer and saves a screenshot; it is
skipped, saying why, where either is missing. The other tests speak HTTP and websockets with
aiohttp, so the URL, the refusals and the shutdown are checked wherever textual-serve is."""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "presets"
# The wait for a tab's app to draw its first screen: a cold Textual start on a busy 2-core box.
APP_START_S = 90


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(runs: Path, port: int) -> subprocess.Popen:
    # Its own process group: a signal meant for it must not reach pytest.
    return subprocess.Popen([sys.executable, "-m", "tui", "serve-web", "--port", str(port), "--presets", str(PRESETS),
                             "--runs-dir", str(runs)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def first_line(proc: subprocess.Popen, timeout: float = 60) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"serve-web printed nothing in {timeout} s; stderr: {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc.stdout.readline().rstrip("\n")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def apps_of(proc: subprocess.Popen) -> list[psutil.Process]:
    return [child for child in psutil.Process(proc.pid).children(recursive=True) if "tui" in child.cmdline()]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


textual_serve = pytest.importorskip("textual_serve", reason="textual-serve is not installed (the `web` extra)")
aiohttp = pytest.importorskip("aiohttp")


@pytest.fixture
def server(tmp_path):
    port = free_port()
    proc = start_server(tmp_path / "runs", port)
    proc.url = first_line(proc)
    proc.port = port
    yield proc
    stop(proc)


def test_loopback_names():
    from tui.web_view import is_loopback_host

    for host in ("127.0.0.1:8000", "localhost:9000", "LOCALHOST", "[::1]:8000", "127.0.0.2", "app.localhost:80"):
        assert is_loopback_host(host), host
    for host in ("example.com:8000", "10.0.0.5:8000", "[::2]:8000", "localhost.example.com", "", "127.0.0.1.nip.io"):
        assert not is_loopback_host(host), host


def test_first_line_is_the_url_and_a_busy_port_is_one_line(server, tmp_path):
    assert server.url == f"http://127.0.0.1:{server.port}"
    second = subprocess.run([sys.executable, "-m", "tui", "serve-web", "--port", str(server.port), "--runs-dir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2
    assert second.stderr == f"orpo-tui serve-web: 127.0.0.1:{server.port}: port in use (choose another with --port)\n"
    assert second.stdout == ""


def test_bound_to_loopback_only(server):
    process = psutil.Process(server.pid)
    connections = getattr(process, "net_connections", process.connections)(kind="inet")  # psutil < 6 calls it connections
    listening = {conn.laddr for conn in connections if conn.status == psutil.CONN_LISTEN}
    assert listening == {("127.0.0.1", server.port)}


async def _get(port: int, host: str | None = None) -> tuple[int, str]:
    headers = {"Host": host} if host else {}
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/", headers=headers) as response:
        return response.status, await response.text()


def test_page_dials_back_the_host_the_browser_used(server):
    # Through `ssh -L 9000:127.0.0.1:8000` the laptop's browser sends Host: localhost:9000.
    status, page = asyncio.run(_get(server.port, "localhost:9000"))
    assert status == 200
    assert 'data-session-websocket-url="ws://localhost:9000/ws"' in page
    status, page = asyncio.run(_get(server.port))
    assert f'data-session-websocket-url="ws://127.0.0.1:{server.port}/ws"' in page


async def _open_socket(port: int, origin: str) -> int:
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(f"http://127.0.0.1:{port}/ws", headers={"Origin": origin}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_other_sites_and_other_host_names_are_refused_before_an_app_starts(server):
    # Any page the user visits could open a websocket to 127.0.0.1 (no same-origin rule for
    # them); a rebound DNS name reaches it with a foreign Host.
    status, text = asyncio.run(_get(server.port, f"rebound.example:{server.port}"))
    assert (status, text) == (403, f"orpo-tui serve-web: host 'rebound.example:{server.port}' is not this machine's loopback\n")
    assert asyncio.run(_open_socket(server.port, "https://evil.example")) == 403
    assert apps_of(server) == []


async def _open_tab(port: int):
    """Open a websocket as a tab's page does and read until the app has drawn the preset list."""
    session = aiohttp.ClientSession()
    tab = await session.ws_connect(f"http://127.0.0.1:{port}/ws?width=120&height=40",
                                   headers={"Origin": f"http://127.0.0.1:{port}"})
    drawn = b""
    deadline = time.monotonic() + APP_START_S
    while b"demo" not in drawn and time.monotonic() < deadline:
        message = await tab.receive(timeout=APP_START_S)
        if message.type == aiohttp.WSMsgType.BINARY:
            drawn += message.data
        elif message.type != aiohttp.WSMsgType.TEXT:
            break
    assert b"demo" in drawn, drawn[-2000:]
    return session, tab


def test_a_closed_tab_ends_its_app(server):
    async def open_and_close() -> list[psutil.Process]:
        session, tab = await _open_tab(server.port)
        apps = apps_of(server)
        await tab.close()
        await session.close()
        return apps

    apps = asyncio.run(open_and_close())
    assert len(apps) == 1
    wait_until(lambda: gone(apps[0]), 30, "the closed tab's app ends")
    assert server.poll() is None


# A terminal's Ctrl-C reaches the whole foreground group (the server and its apps); `kill -INT`
# and `kill` reach the server alone, which then has to end the apps itself.
@pytest.mark.parametrize(("signum", "to_group"), [(signal.SIGINT, True), (signal.SIGINT, False), (signal.SIGTERM, False)],
                         ids=["ctrl-c", "kill-int", "kill-term"])
def test_a_signal_stops_the_server_and_the_apps_of_open_tabs(server, signum, to_group):
    async def open_tab_then_interrupt():
        session, tab = await _open_tab(server.port)
        apps = apps_of(server)
        if to_group:
            os.killpg(server.pid, signum)
        else:
            server.send_signal(signum)
        message = await tab.receive(timeout=60)
        while message.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT):  # the app's last frames
            message = await tab.receive(timeout=60)
        code = await asyncio.to_thread(server.wait, 60)
        await session.close()
        return apps, message, code

    apps, message, code = asyncio.run(open_tab_then_interrupt())
    assert len(apps) == 1
    # The page is told the server went away (rather than its socket being dropped when aiohttp gives up on it).
    assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY, "server stopped")
    assert code == 0, server.stderr.read()
    assert all(gone(app) for app in apps)
    assert server.stderr.read() == ""


def test_without_textual_serve_one_line_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['textual_serve'] = None; from tui.cli import main; "
            f"sys.exit(main(['serve-web', '--runs-dir', {str(tmp_path)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == ("orpo-tui serve-web: textual-serve is not installed (no module textual_serve): "
                          "pip install 'orpo-tui[web]'\n")


# --- in a real browser ------------------------------------------------------------------

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# textual-serve's page keeps its xterm.js Terminal in a closure; this catches it as it is
# assigned to the page's terminal object (the one with a websocket_url), so the test can read
# the screen from the terminal's own buffer (the page draws with WebGL or canvas, not DOM rows).
CATCH_TERMINAL = """
Object.defineProperty(Object.prototype, 'terminal', {
  configurable: true,
  set(value) {
    Object.defineProperty(this, 'terminal', {value, writable: true, configurable: true, enumerable: true});
    if (this.websocket_url !== undefined) window.__orpoTerminal = value;
  },
});
"""
SCREEN_TEXT = """() => {
  const terminal = window.__orpoTerminal;
  if (!terminal) return null;
  const buffer = terminal.buffer.active, rows = [];
  for (let row = 0; row < terminal.rows; row++) {
    const line = buffer.getLine(buffer.viewportY + row);
    rows.push(line ? line.translateToString(true) : '');
  }
  return rows.join('\\n');
}"""


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and (found := shutil.which(candidate)):
            return found
    return None


@pytest.fixture
def browser_path() -> str:
    """Checked before the server starts, so that a skip costs nothing."""
    found = chromium_path()
    if found is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium; or set CHROMIUM=path)")
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the `test` extra)")
    return found


def test_in_chromium_the_preset_list_shows_and_f3_opens_the_runs_list(browser_path, server, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.add_init_script(CATCH_TERMINAL)
            page.goto(server.url + "/")
            screen = wait_until(lambda: (text := page.evaluate(SCREEN_TEXT)) and "builtin:tiny" in text and text,
                                APP_START_S, "the preset list in the page")
            assert "orpo-tui" in screen and "Preset" in screen
            demo_row = next(line for line in screen.splitlines() if "builtin:tiny" in line)
            assert demo_row.split()[0] == "demo"
            shot = Path(os.environ.get("WEB_VIEW_SCREENSHOT", tmp_path / "web-view.png"))
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # Keys reach the app once the terminal has focus, as after a click in a real tab.
            page.locator(".xterm-helper-textarea").focus()
            page.keyboard.press("F3")
            runs = wait_until(lambda: (text := page.evaluate(SCREEN_TEXT)) and "Runs —" in text and text, 30,
                              "the runs list after F3")
            assert str(tmp_path / "runs") in runs
            apps = apps_of(server)
            assert len(apps) == 1
            page.close()
            wait_until(lambda: all(gone(app) for app in apps), 30, "the closed tab's app ends")
        finally:
            browser.close()
