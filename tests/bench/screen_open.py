"""Time from a key press to a screen's first full paint, in the real app in a pseudo-terminal.

The app runs as it would over SSH: a child process on a pty of a fixed size, writing escape
codes that this script reads. For each screen the script waits until the app shows where the
key press starts from, lets the output settle, writes the key and stamps the time, then reads
until every marker of the new screen has appeared in the output written after the key: that
moment is the first full paint (Textual writes a whole frame in one go, so the last marker
arrives with the frame that holds all of them).

One function per screen; `main` prints a table of all of them.

    python tests/bench/screen_open.py [-n 5] [--size 80x24]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Pty:
    """The real app on a pseudo-terminal, with the output decoded and escape codes removed."""

    def __init__(self, argv: list[str], size: tuple[int, int], env: dict) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.execvpe(argv[0], argv, env)
        cols, rows = size
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.text = ""

    def read_for(self, seconds: float) -> str:
        """Read what arrives within `seconds`; returns the new text."""
        new, end = [], time.perf_counter() + seconds
        while (left := end - time.perf_counter()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except OSError:
                    break
                new.append(chunk.decode("utf-8", "replace"))
        text = ANSI.sub("", "".join(new))
        self.text += text
        return text

    def wait_for(self, markers: tuple[str, ...], timeout: float = 30.0, since: str = "") -> float:
        """Read until every marker is in the text read since the call; the moment it is."""
        seen, end = since, time.perf_counter() + timeout
        while time.perf_counter() < end:
            seen += self.read_for(0.002)
            if all(m in seen for m in markers):
                return time.perf_counter()
        missing = [m for m in markers if m not in seen]
        raise SystemExit(f"no paint with {missing} within {timeout:.0f} s; last output:\n{seen[-1500:]}")

    def settle(self, seconds: float = 1.0) -> None:
        """Let start-up work finish (the cursor blinks forever, so the output is never quiet)."""
        self.read_for(seconds)

    def press(self, keys: str) -> float:
        t = time.perf_counter()
        os.write(self.fd, keys.encode())
        return t

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def start_app(tmp: Path, size: tuple[int, int]) -> Pty:
    presets = tmp / "presets"
    presets.mkdir(exist_ok=True)
    shutil.copy(REPO / "presets" / "demo.toml", presets / "demo.toml")
    env = {**os.environ, "TERM": "xterm-256color", "PYTHONPATH": str(REPO), "COLUMNS": str(size[0]), "LINES": str(size[1])}
    env.setdefault("HF_HOME", str(tmp / "hf"))
    return Pty([sys.executable, "-m", "tui", "--presets", str(presets), "--runs-dir", str(tmp / "runs")], size, env)


# ---------------------------------------------------------------------------- screens


def preset_editor(size: tuple[int, int]) -> float:
    """Enter on the demo preset in the list, until the editor's form and footer are painted."""
    with tempfile.TemporaryDirectory(prefix="orpo-tui-bench-") as tmp:
        app = start_app(Path(tmp), size)
        try:
            app.wait_for(("builtin:tiny",))  # the preset list with the demo row
            app.settle()
            t0 = app.press("\r")
            t1 = app.wait_for(("Edit preset", "description", "model.path", "Save"))
            return (t1 - t0) * 1000
        finally:
            app.close()


SCREENS = {"preset editor": preset_editor}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="samples per screen, each in a fresh app (default 5)")
    parser.add_argument("--size", default="80x24", help="terminal size COLSxROWS (default 80x24)")
    parser.add_argument("--only", choices=sorted(SCREENS), help="one screen only")
    args = parser.parse_args()
    size = tuple(int(x) for x in args.size.split("x"))
    print(f"key press -> first full paint, real app in a {args.size} pty, N={args.n} fresh apps per screen")
    print(f"{'screen':<16} {'median ms':>10} {'min ms':>8}   samples (ms)")
    for name, measure in SCREENS.items():
        if args.only and name != args.only:
            continue
        samples = [measure(size) for _ in range(args.n)]
        print(f"{name:<16} {statistics.median(samples):>10.0f} {min(samples):>8.0f}   " + " ".join(f"{s:.0f}" for s in samples))


if __name__ == "__main__":
    main()
