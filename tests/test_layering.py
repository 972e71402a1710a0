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
        "import trainer.pure.config, trainer.pure.runs, trainer.pure.events\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == []


def _loaded(imports: str, roots: tuple) -> list:
    code = (
        "import json, sys\n"
        f"{imports}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_trainer_mlx_half_never_imports_textual():
    assert _loaded("import trainer.loop, trainer.cli, trainer.data, trainer.model", ("textual",)) == []


def test_cli_reports_config_errors_without_loading_mlx():
    # The CLI module itself stays light: mlx is imported only once a run really starts.
    assert _loaded("import trainer.cli", ("mlx", "mlx_lm", "datasets")) == []


def test_reporter_needs_no_training_stack():
    # The CLI builds its reporter before the MLX stack loads.
    assert _loaded("import trainer.reporter", ("mlx", "mlx_lm", "datasets")) == []
