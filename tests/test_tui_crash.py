"""An unexpected error in the app: the terminal is given back, one line says what happened
and where the traceback is, the traceback is in that file, and the process exits non-zero."""

import os
import pty
import re
import select
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import sys
from tui.screens import preset_list
def boom(self):
    raise RuntimeError("injected failure for the crash test")
preset_list.PresetListScreen.on_mount = boom
import tui.cli
sys.exit(tui.cli.main(["--presets", sys.argv[1], "--runs-dir", sys.argv[2]]))
"""


def run_in_pty(args: list[str], env: dict, timeout: float = 60) -> tuple[int, str]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: a real terminal on its stdin/stdout/stderr
        os.chdir(REPO)
        os.execve(sys.executable, [sys.executable, *args], env)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_an_unexpected_error_leaves_a_crash_file_a_line_and_a_nonzero_exit(tmp_path):
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "TERM": "xterm-256color",
           "COLUMNS": "100", "LINES": "30"}
    code, out = run_in_pty(["-c", CHILD, str(tmp_path / "presets"), str(tmp_path / "runs")], env)
    assert code == 1, out[-2000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", out)
    match = re.search(r"orpo-tui stopped on an unexpected error: RuntimeError: injected failure for the crash test; "
                      r"the traceback is in (\S+\.log)", plain)
    assert match, plain[-2000:]
    crash = Path(match.group(1))
    assert crash.parent == tmp_path / "state" / "orpo-tui"
    text = crash.read_text()
    assert "Traceback" in text and "injected failure for the crash test" in text
    assert f"runs: {tmp_path / 'runs'}" in text
