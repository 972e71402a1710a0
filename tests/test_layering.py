"""The pure half of trainer/ must not pull in the heavy libraries: the TUI
imports it and has to start in well under a second."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("mlx", "mlx_lm", "datasets", "textual")


def test_pure_trainer_modules_import_no_heavy_libraries():
    code = (
        "import json, sys\n"
        "import trainer.config, trainer.runs, trainer.events\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []
