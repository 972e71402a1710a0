"""Every test runs offline, with caches in a temporary folder: nothing reaches a hub and
nothing touches the user's ~/.cache. Set before any test module imports `datasets`, which
reads HF_HOME at import time. The user's settings file is out of reach too: a
`notify_command` there must not run for every test run (tests that want one write their own
under XDG_CONFIG_HOME)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="orpo-tui-tests-"))
os.environ["HF_HOME"] = str(_ROOT / "hf")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# A developer's own settings file (~/.config/orpo-tui/settings.toml) must not steer where a
# test's runs go, nor may a test write into the real user folders.
os.environ["XDG_CONFIG_HOME"] = str(_ROOT / "config")
os.environ["XDG_DATA_HOME"] = str(_ROOT / "data")
# The apps the tests start in a pty or tmux take their size from that terminal, as a user's
# do; pytest-xdist's workers set COLUMNS=80 and LINES=24, which would override it.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# The built-in model is shared by the whole session: building it once is enough.
os.environ.setdefault("ORPO_TUI_CACHE", str(_ROOT / "cache"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def trainer_stand_in():
    """A live process to stand for a run's trainer pid: the app reads its CPU and memory and
    watches it end."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()
