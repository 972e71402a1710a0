"""The package installed as a tool, the way `pipx install` / `uv tool install` / `pip install .`
leave it: not editable, in a fresh venv, started from another folder with an empty HOME. The
app must find its presets and runs in the user's folders (there is no repository beside the
installed code), seed the demo preset there on first start, say in F1 which folders it uses,
and `orpo-train` on the seeded demo must put its run where the app lists runs.

How the install is made, offline apart from the build backend: the source (what an sdist
holds) is copied to a temporary folder and `pip install --no-deps` builds and installs it into
a fresh `python -m venv` from that copy, non-editable, in pip's usual isolated build (which
fetches setuptools from the package index, as any `pip install .` does). The dependencies are
not downloaded again: a .pth file in the fresh venv appends this test run's own site-packages
to its path, after the fresh venv's own site-packages, so the installed `trainer` and `tui`
are the ones imported (checked) and mlx, textual and the rest come from here.

Slow (a venv, a build, the built-in model generated into the empty HOME, a short training):
marked `slow`; `pytest -m "not slow"` leaves it out, the README's test command and .ci/run
run it.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import sysconfig
import termios
import time
from pathlib import Path

import pytest

from trainer.pure.runs import read_status
from trainer.pure.states import RunState

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
# What the build needs, as an sdist would carry it; presets/ for the demo that tui/seed links to.
SOURCE = ("pyproject.toml", "README.md", "trainer", "tui", "presets")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]|\x1b\][^\x07]*\x07")
F1, CTRL_Q = "\x1bOP", "\x11"


def _bin(venv: Path, name: str) -> Path:
    return venv / "bin" / name


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding a non-editable install of this checkout; returns the venv."""
    tmp = tmp_path_factory.mktemp("installed")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCE:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(_bin(venv, "python")), "-m", "pip", "install", "-q", "--no-deps", str(src)],
                         capture_output=True, text=True, timeout=600, env=_clean_env())
    assert pip.returncode == 0, pip.stdout + pip.stderr
    fresh_site = subprocess.run([str(_bin(venv, "python")), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(fresh_site) / "orpo_tui_test_deps.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def _clean_env(**extra: str) -> dict:
    """This environment without anything that would point the child at the checkout or at
    the real user's folders."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "HF_HOME", "ORPO_TUI_CACHE", "PYTHONSTARTUP")
           and not k.startswith("XDG_")}
    return {**env, **extra}


@pytest.fixture
def user(tmp_path) -> tuple[Path, Path, dict]:
    """An empty HOME, a working folder outside any checkout, and the environment for both."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    return home, elsewhere, _clean_env(HOME=str(home), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")


def test_the_installed_code_is_the_copy_in_the_fresh_venv(installed, user):
    home, elsewhere, env = user
    code = "import trainer, tui, textual, mlx; print(trainer.__file__); print(tui.__file__)"
    out = subprocess.run([str(_bin(installed, "python")), "-c", code], cwd=elsewhere, env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    for path in out:
        assert Path(path).is_relative_to(installed), out
    assert (Path(out[1]).parent / "seed" / "demo.toml").read_bytes() == (REPO / "presets" / "demo.toml").read_bytes()


class Terminal:
    """The installed `orpo-tui` on a pseudo-terminal; `text` is its output without escapes."""

    def __init__(self, argv: list[str], cwd: Path, env: dict, size: tuple[int, int] = (160, 48)) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.chdir(cwd)
            os.execve(argv[0], argv, {**env, "TERM": "xterm-256color", "COLUMNS": str(size[0]), "LINES": str(size[1])})
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.raw = ""

    def read(self, seconds: float) -> bool:
        """Read for up to `seconds`; False once the child closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], seconds)
        if not ready:
            return True
        try:
            chunk = os.read(self.fd, 1 << 16)
        except OSError:
            return False
        self.raw += chunk.decode("utf-8", "replace")
        return bool(chunk)

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw)

    def wait_for(self, *markers: str, timeout: float = 60) -> None:
        start = len(self.text)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(m in self.text[start:] for m in markers):
                return
            if not self.read(0.2):
                break
        raise AssertionError(f"never showed {markers}; last output:\n{self.text[-3000:]}")

    def press(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def quit(self, timeout: float = 30) -> int:
        """ctrl+q; the exit code."""
        self.press(CTRL_Q)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.pid = 0
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            self.read(0.2)
        raise AssertionError(f"the app did not exit; last output:\n{self.text[-2000:]}")

    def close(self) -> None:
        """After a failed check: the app must not outlive the test."""
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.fd)
            self.pid = 0


@pytest.fixture
def start_app(installed, user):
    started = []

    def start() -> Terminal:
        home, elsewhere, env = user
        started.append(Terminal([str(_bin(installed, "orpo-tui"))], elsewhere, env))
        return started[-1]

    yield start
    for app in started:
        app.close()


def test_first_start_seeds_the_demo_lists_it_and_f1_names_the_user_folders(user, start_app):
    home, elsewhere, env = user
    app = start_app()
    app.wait_for("demo", "builtin:tiny", "builtin:demo")  # the demo's row in the preset list
    app.press(F1)
    app.wait_for("Presets folder", "~/.config/orpo-tui/presets", "Runs folder", "~/.local/share/orpo-tui/runs")
    assert app.quit() == 0, app.text[-2000:]
    seeded = home / ".config" / "orpo-tui" / "presets" / "demo.toml"
    assert seeded.read_bytes() == (REPO / "presets" / "demo.toml").read_bytes()
    assert sorted(os.listdir(elsewhere)) == []  # nothing written where the app was started

    # A second start never overwrites the user's file, edited or not.
    seeded.write_text(seeded.read_text().replace("iters = 150", "iters = 7"))
    app = start_app()
    app.wait_for("demo", "builtin:tiny")
    assert app.quit() == 0
    assert "iters = 7" in seeded.read_text()


def test_orpo_train_on_the_seeded_demo_puts_the_run_in_the_user_data_folder(installed, user, start_app):
    home, elsewhere, env = user
    app = start_app()
    app.wait_for("demo", "builtin:tiny")
    assert app.quit() == 0
    preset = home / ".config" / "orpo-tui" / "presets" / "demo.toml"

    proc = subprocess.run([str(_bin(installed, "orpo-train")), str(preset), "--set", "training.iters=6",
                           "--set", "training.steps_per_eval=3", "--set", "training.save_every=6"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(proc.stdout.splitlines()[0])
    assert run_dir.parent == home / ".local" / "share" / "orpo-tui" / "runs"
    status = read_status(run_dir)
    assert status["state"] == RunState.COMPLETED and status["step"] == 6, status
    assert os.listdir(elsewhere) == []  # no ./runs beside the shell
    assert (home / ".cache" / "orpo-tui").is_dir()  # the built-in model was made in the empty HOME

    # The app's own view of runs (its CLI, same folder resolution) lists that run.
    summary = subprocess.run([str(_bin(installed, "orpo-tui")), "summary", "--csv"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=120)
    assert summary.returncode == 0, summary.stderr
    assert run_dir.name in summary.stdout
