"""The playground's plumbing, without Textual: the `orpo-train serve` processes it starts, the
streamed chat completions it asks them for, and the playground.jsonl it saves answers to.

A server runs in its own process group (it may start children of its own), so stopping it
ends the whole group; every server started here is also stopped when the interpreter exits,
so a crash of the app leaves none behind.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import read_base_url, serve_argv
from trainer.pure.trainer_process import PROG, error_line

START_TIMEOUT_S = 180.0  # loading a model on a busy laptop can take a while
STOP_WAIT_S = 5.0  # after SIGTERM, before SIGKILL
STREAM_TIMEOUT_S = 300.0  # no byte from the server for this long ends the answer with an error


class ServeError(Exception):
    """A server that could not start or answer; the one line to show."""


@dataclass
class Settings:
    """The sampling settings sent with every prompt (and saved with its answers)."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 128
    seed: int = 0


# The settings as the user types them: the field, its type, and the range it must be in.
SETTING_RANGES = {"temperature": (float, 0.0, 5.0), "top_p": (float, 0.0, 1.0), "max_tokens": (int, 1, 32768),
                  "seed": (int, 0, 2**32 - 1)}


def parse_settings(texts: dict[str, str]) -> Settings:
    """Settings from the text of their fields; ValueError names the first bad one."""
    values = {}
    for name, (kind, low, high) in SETTING_RANGES.items():
        text = texts.get(name, "").strip()
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{name}: '{text}' is not {'a whole number' if kind is int else 'a number'}") from None
        if not low <= value <= high:
            raise ValueError(f"{name}: {text} is not between {low} and {high}")
        values[name] = value
    return Settings(**values)


# ---------------------------------------------------------------------------- servers

# What a column can put behind its server: the run's latest adapters, its best ones, its
# fused model, or the bare base model it was trained from (`orpo-train serve`'s flags).
SERVED = ("final", "best", "fused", "base")


def served_argv(run_dir: Path, served: str) -> list[str]:
    if served not in SERVED:
        raise ValueError(f"served must be one of {SERVED}, not {served!r}")
    # The server ends with the app even when the app is SIGKILLed: it holds the server's stdin.
    return serve_argv(run_dir, best=served == "best", fused=served == "fused", base=served == "base",
                      until_stdin_closes=True)


_live: set[ServerProcess] = set()
# Reentrant: the hangup handler (below) runs on the main thread, maybe while it holds this.
_live_guard = threading.RLock()


class ServerProcess:
    """One `orpo-train serve` process: started, asked for its URL, stopped with its group."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self._stopped = False

    def start(self, timeout: float = START_TIMEOUT_S) -> str:
        """Start the server and wait for its first stdout line, its base URL; ServeError with
        the server's own last stderr line when it exits or says nothing in time."""
        with _live_guard:
            if self._stopped:
                raise ServeError("stopped")
            # stderr goes to a nameless file: a pipe nobody drains would block a chatty server.
            self._stderr = tempfile.TemporaryFile("w+")  # noqa: SIM115
            try:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=self._stderr, start_new_session=True, text=True)
            except OSError as exc:
                self._stderr.close()
                raise ServeError(f"{self.argv[0]}: {exc.strerror or exc}") from None
            _live.add(self)
        try:
            line = read_base_url(self.proc, timeout)
        except (OSError, ValueError):
            line = None  # stopped meanwhile
        finally:
            # Closed here, by the thread reading it: the server writes nothing more there.
            self.proc.stdout.close()
        if line is None or not line.startswith("http"):
            # No line is a timeout or an exit (end of its stdout): an exit comes at once.
            try:
                self.proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.stop()
                raise ServeError(f"no URL from the server within {timeout:.0f}s") from None
            reason = self.stderr_line() or line
            self.stop()
            raise ServeError(reason or f"the server exited with {self.proc.returncode}")
        self.url = line.rstrip("/")
        return self.url

    def stderr_line(self) -> str:
        """The server's one-line reason: its last stderr line."""
        try:
            self._stderr.seek(0)
            text = self._stderr.read()
        except (OSError, ValueError, AttributeError):
            return ""
        if not text.strip():
            return ""
        return error_line(text, self.proc.returncode if self.proc else None).removeprefix(f"{PROG} serve: ")

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def exit_reason(self) -> str:
        """Why a server that was answering is gone: the signal that ended it, or the last
        line it wrote when it failed (a stop asked by someone else says only that)."""
        code = self.proc.returncode if self.proc else None
        if code is not None and code < 0:
            return f"the server was killed ({signal.Signals(-code).name})"
        if code == 0:
            return "the server was stopped"
        return self.stderr_line() or f"the server exited with {code}"

    def stop(self) -> None:
        """End the server's whole process group: SIGTERM, then SIGKILL if it lingers. It
        stays listed as live until it is gone, so that the app's exit, which stops every
        live server, waits for one a closing screen is still stopping."""
        with _live_guard:
            self._stopped = True
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=STOP_WAIT_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
            else:
                _signal_group(proc.pid, signal.SIGKILL)  # children it left in its group
            stderr = getattr(self, "_stderr", None)
            if stderr is not None:
                stderr.close()
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        with _live_guard:
            _live.discard(self)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all_servers() -> None:
    """Every server still running: at app exit, at interpreter exit after a crash, and on a
    hangup. All are asked at once, then each is waited for."""
    with _live_guard:
        servers = list(_live)
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            _signal_group(server.proc.pid, signal.SIGTERM)
    for server in servers:
        server.stop()


_HANGUP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


def stop_servers_on_hangup() -> None:
    """A lost SSH link (SIGHUP) or a SIGTERM ends the app without its exit handlers; the
    servers, in sessions of their own, would live on. Stop them first, then let the signal
    do what it did before. Only the main thread may install handlers: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _HANGUP_SIGNALS:
        previous = signal.getsignal(signum)
        if getattr(previous, "stops_servers", False):
            continue

        def handler(number, frame, previous=previous):
            stop_all_servers()
            if callable(previous):
                previous(number, frame)
            elif previous != signal.SIG_IGN:
                signal.signal(number, signal.SIG_DFL)
                os.kill(os.getpid(), number)

        handler.stops_servers = True
        signal.signal(signum, handler)


def live_servers() -> list[ServerProcess]:
    with _live_guard:
        return list(_live)


atexit.register(stop_all_servers)


# ---------------------------------------------------------------------------- streaming

def completion_request(prompt: str, settings: Settings, chat: bool) -> tuple[str, dict]:
    """The endpoint (below the base URL) and the body: a chat for a run trained through the
    chat template, else the plain prompt, the way the run saw its prompts in training."""
    sampling = {"stream": True, "temperature": settings.temperature, "top_p": settings.top_p,
                "max_tokens": settings.max_tokens, "seed": settings.seed}
    if chat:
        return "/chat/completions", {"messages": [{"role": "user", "content": prompt}], **sampling}
    return "/completions", {"prompt": prompt, **sampling}


def sse_pieces(lines: Iterable[bytes]) -> Iterator[str]:
    """The text pieces of an OpenAI-style stream of server-sent events, in order; ServeError
    for an error event or a line that is not JSON."""
    for raw in lines:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue  # blank separators, `: keepalive` comments, event names
        data = line[len("data:"):].strip()
        if data == "[DONE]":
            return
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise ServeError(f"the server sent a line that is not JSON: {data[:80]}") from None
        if isinstance(event, dict) and "error" in event:
            error = event["error"]
            raise ServeError(str(error.get("message", error) if isinstance(error, dict) else error))
        for choice in event.get("choices") or []:
            # A chat chunk carries its piece in delta.content, a plain completion in text.
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                yield piece


def stream_completion(url: str, prompt: str, settings: Settings, chat: bool, on_piece: Callable[[str], None],
                      cancelled: Callable[[], bool] = lambda: False, timeout: float = STREAM_TIMEOUT_S) -> str:
    """Ask the server at `url` (``http://127.0.0.1:PORT/v1``) for a streamed completion,
    calling `on_piece` with each piece as it arrives; returns the whole answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        endpoint, body = completion_request(prompt, settings, chat)
        conn.request("POST", parts.path + endpoint, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        if response.status != 200:
            text = response.read().decode("utf-8", "replace").strip().splitlines()
            raise ServeError(f"HTTP {response.status} {response.reason}" + (f": {text[-1][:120]}" if text else ""))
        answer = []
        for piece in sse_pieces(iter(response.readline, b"")):
            if cancelled():
                break
            answer.append(piece)
            on_piece(piece)
        return "".join(answer)
    except (OSError, http.client.HTTPException) as exc:
        raise ServeError(f"{url}: {exc}") from None
    finally:
        conn.close()


# ---------------------------------------------------------------------------- showing

# A model may say any character: control ones (a tiny model's bytes, an escape) are shown as
# U+FFFD rather than sent to the terminal. Saved answers keep them (JSON escapes them).
_CONTROL = {c: "\ufffd" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)] if chr(c) not in "\n\t"}


def shown_text(text: str) -> str:
    return text.translate(_CONTROL)


# ---------------------------------------------------------------------------- saving

def playground_entry(prompt: str, settings: Settings, answers: list[dict]) -> dict:
    """One saved exchange. `answers`: per column, {"column", "run", "served", "answer"}."""
    return {"time": time.time(), "prompt": prompt, "settings": asdict(settings), "answers": answers}


def save_entry(run_dirs: Iterable[Path], entry: dict) -> list[str]:
    """Append the entry to each run's playground.jsonl; the one-line problems of the runs it
    could not be written to (the others are written)."""
    line = json.dumps(entry, ensure_ascii=False) + "\n"
    problems = []
    for run_dir in dict.fromkeys(run_dirs):
        target = RunFolder(run_dir).playground
        try:
            with target.open("a", encoding="utf-8") as f:
                f.write(line)
        except OSError as exc:
            problems.append(f"{exc.filename or target}: {exc.strerror or exc}")
    return problems


def read_entries(run_dir: Path) -> tuple[list[dict], list[str]]:
    """A run's saved playground exchanges, and a note for each line that could not be read
    (skipped: a damaged line costs only itself)."""
    path = RunFolder(run_dir).playground
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"{path}: {exc.strerror or exc}"]
    entries, notes = [], []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            entry = None
        if not (isinstance(entry, dict) and isinstance(entry.get("prompt"), str)
                and isinstance(entry.get("answers"), list)
                and all(isinstance(a, dict) for a in entry["answers"])):
            notes.append(f"{path.name}: line {number}: not a saved exchange, skipped")
            continue
        entries.append(entry)
    return entries, notes
