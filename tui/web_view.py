"""`orpo-tui serve-web`: the app in a browser tab, served by textual-serve on 127.0.0.1 only.

Each tab gets its own `orpo-tui` process (textual-serve starts one per websocket) with the
presets and runs folders the server resolved, so every tab shows the same experiments.

textual-serve builds the page's websocket URL from the host it was told to bind to, which
breaks behind `ssh -L 9000:127.0.0.1:8000` (the laptop's page would dial 127.0.0.1:8000). Here
the URL is taken from the Host header the browser sent, so any tunnel port works. A server on
loopback that starts processes is still reachable by any web page the user visits (websockets
ignore the same-origin rule) and by DNS rebinding, so requests naming a non-loopback host, and
websockets opened from another origin, are refused before an app is started.

Only imported when serve-web runs: textual-serve is the optional `web` extra."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

import aiohttp_jinja2
from aiohttp import WSCloseCode, web
from textual_serve.app_service import AppService
from textual_serve.server import Server, to_int

HOST = "127.0.0.1"
# A tab's app gets this long to quit once its tab or the server closes; then it is killed.
APP_QUIT_S = 5.0
# aiohttp waits this long for the tabs' handlers at shutdown (each ends its app: see _end_app).
SHUTDOWN_GRACE_S = 3 * APP_QUIT_S


def app_command(presets: Path, runs: Path) -> str:
    """The shell line textual-serve runs per tab: this interpreter's `orpo-tui` on these folders."""
    # exec: the app is textual-serve's child itself, not a shell's, so ending it ends the app.
    return "exec " + shlex.join([sys.executable, "-m", "tui", "--presets", str(presets), "--runs-dir", str(runs)])


def is_loopback_host(host: str) -> bool:
    """True for a Host header naming this machine's loopback (`localhost:9000`, `127.0.0.1`, `[::1]:8000`)."""
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1:].split("]", 1)[0]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(request: web.Request) -> str | None:
    """Why this request may not reach the app, or None when it may."""
    if not is_loopback_host(request.host):
        return f"host {request.host!r} is not this machine's loopback"
    origin = request.headers.get("Origin")
    # Browsers always send Origin on a websocket; a page served here has this exact origin.
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        return f"origin {origin!r} is not this server"
    return None


class WebViewServer(Server):
    def __init__(self, command: str, port: int) -> None:
        super().__init__(command, host=HOST, port=port, title="orpo-tui")
        self._sockets: set[web.WebSocketResponse] = set()

    @aiohttp_jinja2.template("app_index.html")
    async def handle_index(self, request: web.Request) -> dict[str, Any]:
        reason = refusal(request)
        if reason:
            raise web.HTTPForbidden(text=f"orpo-tui serve-web: {reason}\n")
        socket_scheme = "wss" if request.scheme == "https" else "ws"
        # The keys textual-serve's own page template reads.
        return {
            "font_size": to_int(request.query.get("fontsize", "16"), 16),
            "app_websocket_url": f"{socket_scheme}://{request.host}/ws",
            "config": {"static": {"url": "/static/"}},
            "application": {"name": self.title},
        }

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        reason = refusal(request)
        if reason:
            raise web.HTTPForbidden(text=f"orpo-tui serve-web: {reason}\n")
        socket = web.WebSocketResponse(heartbeat=15)
        await socket.prepare(request)
        app = AppService(self.command, write_bytes=socket.send_bytes, write_str=socket.send_str, close=socket.close,
                         download_manager=self.download_manager, debug=self.debug)
        self._sockets.add(socket)
        try:
            await app.start(to_int(request.query.get("width", "80"), 80), to_int(request.query.get("height", "24"), 24))
            await self._process_messages(socket, app)
        finally:
            self._sockets.discard(socket)
            await _end_app(app)
        return socket

    async def on_startup(self, app: web.Application) -> None:
        """textual-serve prints a banner here; serve() prints the URL once the port is bound instead."""

    async def on_shutdown(self, app: web.Application) -> None:
        # Closing a tab's socket ends textual-serve's read loop, which sends the app "quit"
        # and waits for it; without this aiohttp would wait for open tabs until its timeout.
        for socket in list(self._sockets):
            await socket.close(code=WSCloseCode.GOING_AWAY, message=b"server stopped")


async def _end_app(app: AppService) -> None:
    """Ask a tab's app to quit, and wait until its process is gone (killed if it does not quit in time).

    textual-serve's stop() returns once the app's output ends, before the process is reaped:
    the server's loop could then close with the child still unreaped (asyncio warns about it)."""
    process = app._process  # textual-serve keeps no public handle on the app's process
    try:
        await asyncio.wait_for(app.stop(), APP_QUIT_S)
    except asyncio.TimeoutError:
        logging.getLogger(__name__).warning("a tab's app did not quit in %.0f s; killed", APP_QUIT_S)
    if process is not None:
        if process.returncode is None:
            try:
                await asyncio.wait_for(process.wait(), APP_QUIT_S)
            except asyncio.TimeoutError:
                process.kill()
        await process.wait()


def serve(presets: Path, runs: Path, port: int) -> int:
    """Serve until SIGINT/SIGTERM; 0 then, 2 with one line on stderr when the port cannot be bound."""
    logging.basicConfig(level=logging.WARNING, format="orpo-tui serve-web: %(message)s")
    server = WebViewServer(app_command(presets, runs), port)
    url = f"http://{HOST}:{port}"

    def ready(_banner: str) -> None:
        print(url, flush=True)
        print(f"presets {presets}, runs {runs}; one app per browser tab; Ctrl-C stops", flush=True)

    try:
        # _make_app is textual-serve's route table (index, websocket, downloads, statics).
        web.run_app(server._make_app(), host=HOST, port=port, print=ready,
                    shutdown_timeout=SHUTDOWN_GRACE_S, handle_signals=True, loop=asyncio.new_event_loop())
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"orpo-tui serve-web: {HOST}:{port}: port in use (choose another with --port)", file=sys.stderr)
        else:
            print(f"orpo-tui serve-web: {HOST}:{port}: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0
