"""The layers, guarded: the app (tui/) and the pure half of the trainer (trainer/pure/) load
none of the heavy libraries, and the training engine never loads the UI toolkit.

Each check runs in a fresh interpreter in which the forbidden packages cannot be imported:
a finder placed first on sys.meta_path refuses them and records which of our modules was
importing at that moment, so a failure names the culprit even when the import happens deep
inside a dependency or is swallowed by a try/except.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("mlx", "mlx_lm", "datasets", "numpy")

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys, traceback

    BLOCKED = set(json.loads(sys.argv[1]))
    MODULES = json.loads(sys.argv[2])
    OURS = ("tui", "trainer")
    attempts = []

    def culprit():
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if name.split(".")[0] in OURS:
                return name
            frame = frame.f_back
        return "?"

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append([culprit(), name])
                raise ImportError(f"{name} is blocked by the layering test")
            return None

    sys.meta_path.insert(0, Refuse())
    failures = []
    for module in MODULES:
        try:
            importlib.import_module(module)
        except Exception:
            failures.append([module, traceback.format_exc(limit=-3)])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print(json.dumps({"attempts": attempts, "failures": failures, "loaded": loaded}))
    """
)


def modules_under(package_dir: Path, skip: tuple[str, ...] = ()) -> list[str]:
    """Every importable module below a package folder, as dotted names (``__main__`` excluded:
    importing it runs the program)."""
    out = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if not any(name == s or name.startswith(s + ".") for s in skip):
            out.append(name)
    return out


def probe(modules: list[str], blocked: tuple[str, ...]) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(blocked), json.dumps(modules)],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def verdict(report: dict) -> list[str]:
    """One line per offence, naming our module and what it tried to load."""
    lines = [f"{who} imports {what}" for who, what in report["attempts"]]
    lines += [f"{module} failed to import:\n{tb}" for module, tb in report["failures"]]
    lines += [f"{name} was loaded anyway" for name in report["loaded"]]
    return lines


APP_AND_PURE = modules_under(REPO / "tui") + modules_under(REPO / "trainer" / "pure")
ENGINE = modules_under(REPO / "trainer", skip=("trainer.pure",))


def test_module_lists_cover_the_layers():
    assert "tui.app" in APP_AND_PURE and "trainer.pure.config" in APP_AND_PURE
    assert "trainer.cli" in ENGINE and not any(m.startswith("trainer.pure") for m in ENGINE)
    assert len(APP_AND_PURE) > 20


def test_app_and_pure_half_load_no_heavy_library():
    assert verdict(probe(APP_AND_PURE, HEAVY)) == []


def test_pure_half_loads_no_ui_toolkit():
    assert verdict(probe(modules_under(REPO / "trainer" / "pure"), ("textual", "rich", *HEAVY))) == []


def test_engine_never_loads_the_ui_toolkit():
    assert verdict(probe(ENGINE, ("textual",))) == []


def test_the_guard_names_the_module_that_pulls_a_heavy_library_in(tmp_path):
    # A throwaway tui module importing numpy (inside a try, as a careless fallback would)
    # must be caught and named.
    bad = REPO / "tui" / "_layering_canary.py"
    bad.write_text("try:\n    import numpy\nexcept ImportError:\n    numpy = None\n")
    try:
        lines = verdict(probe(["tui._layering_canary"], HEAVY))
    finally:
        bad.unlink()
    assert lines == ["tui._layering_canary imports numpy"]


def test_cli_reports_config_errors_without_loading_mlx(tmp_path):
    # The trainer's CLI module stays light: mlx is imported only once a run really starts.
    # So is its reporter, which it builds before the MLX stack loads.
    # The trackers' libraries load numpy too: trainer.trackers imports them only when one opens.
    report = probe(["trainer.cli", "trainer.reporter", "trainer.run_control", "trainer.trackers"],
                   ("mlx", "mlx_lm", "datasets", "numpy", "tensorboardX", "trackio", "wandb"))
    assert verdict(report) == []


@pytest.mark.parametrize("module", ["trainer.pure.events", "trainer.pure.runs"])
def test_probe_reports_clean_modules_as_clean(module):
    assert probe([module], HEAVY) == {"attempts": [], "failures": [], "loaded": []}
