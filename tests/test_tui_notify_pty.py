"""The real app in a pseudo-terminal starts a tiny real run; when it completes, the bytes the
app writes to its terminal hold the bell and the OSC 9 / OSC 777 notification with the run's
name, state and final val loss (wrapped for tmux when $TMUX is set), or none of them when the
user's settings say `notify_terminal = false`."""

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from pathlib import Path

import pytest

from trainer.pure.events import last_event

REPO = Path(__file__).resolve().parents[1]
TINY = """description = "four steps of the built-in demo"
[model]
path = "builtin:tiny"
[data]
path = "builtin:demo"
[training]
iters = 4
batch_size = 8
steps_per_eval = 2
steps_per_report = 2
save_every = 4
sample_prompts = 0
"""


class App:
    """orpo-tui on a 160x48 pty; `out` is every byte it wrote."""

    def __init__(self, tmp: Path, env: dict) -> None:
        argv = [sys.executable, "-m", "tui", "--presets", str(tmp / "presets"), "--runs-dir", str(tmp / "runs")]
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            # Sized before the app starts, so it cannot read the pty's 80x24 default first.
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 48, 160, 0, 0))
            os.chdir(REPO)
            os.execve(argv[0], argv, env)
        self.out = b""

    def read_until(self, found, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not found(self.out):
            left = deadline - time.monotonic()
            assert left > 0, f"no {what} within {timeout:.0f} s; last output: {self.out[-1500:]!r}"
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    self.out += os.read(self.fd, 1 << 16)
                except OSError:
                    raise AssertionError(f"the app ended; last output: {self.out[-1500:]!r}") from None

    def plain(self) -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.out.decode("utf-8", "replace"))

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(self.fd)


def start_tiny_run(tmp: Path, tmux: str | None, settings: str = "") -> tuple[App, Path]:
    (tmp / "presets").mkdir()
    (tmp / "presets" / "tiny.toml").write_text(TINY)
    (tmp / "config" / "orpo-tui").mkdir(parents=True)
    (tmp / "config" / "orpo-tui" / "settings.toml").write_text(settings)
    env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    env.update(TERM="xterm-256color", PYTHONPATH=str(REPO), XDG_CONFIG_HOME=str(tmp / "config"))
    if tmux:
        env["TMUX"] = tmux
    app = App(tmp, env)
    try:
        app.read_until(lambda out: b"four steps" in out, 60, "preset list")
        time.sleep(0.5)
        app.press("\t")  # to the list, where s starts the highlighted preset
        time.sleep(0.3)
        app.press("s")
        app.read_until(lambda out: b"Monitor" in out, 60, "monitor of the new run")
    except BaseException:
        app.close()
        raise
    [run] = list((tmp / "runs").iterdir())
    return app, run


def final_message(run: Path) -> str:
    val = last_event(run / "metrics.jsonl", "val")
    assert val["step"] == 4
    return f"{run.name} completed, val loss {val['loss']:.4f}"


@pytest.mark.parametrize("tmux", [None, "/tmp/tmux-0/default,4242,0"])
def test_a_completed_run_rings_and_notifies_through_the_terminal(tmp_path, tmux):
    app, run = start_tiny_run(tmp_path, tmux)
    try:
        app.read_until(lambda out: b"]777;" in out, 120, "OSC 777 notification")
        app.read_until(lambda out: b"]777;" in out and out.index(b"]777;") < out.rindex(b"\x07"), 5, "its end")
    finally:
        app.close()
    message = final_message(run)
    osc9 = f"\x1b]9;orpo-tui: {message}\x07".encode()
    osc777 = f"\x1b]777;notify;orpo-tui;{message}\x07".encode()
    if tmux:
        def wrap(seq):
            return b"\x1bPtmux;" + seq.replace(b"\x1b", b"\x1b\x1b") + b"\x1b\\"
        expected = b"\x07" + wrap(osc9) + wrap(osc777)
    else:
        expected = b"\x07" + osc9 + osc777
    assert expected in app.out, app.out[app.out.index(b"]9;") - 40:][:400]
    assert app.out.count(b"]9;") == 1  # once, however many checks ran after the end


def test_notify_terminal_false_in_the_settings_file_keeps_the_terminal_quiet(tmp_path):
    app, run = start_tiny_run(tmp_path, None, "notify_terminal = false\n")
    try:
        # The app still says it in its own toast, painted after the terminal write would be.
        app.read_until(lambda out: "completed, val loss" in re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", out).decode(
            "utf-8", "replace"), 120, "the run-ended toast")
    finally:
        app.close()
    assert final_message(run) in app.plain()
    assert b"]9;" not in app.out and b"]777;" not in app.out
