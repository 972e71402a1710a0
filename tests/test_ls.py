"""`orpo-tui ls`: the runs list for a plain shell, on the committed fixture runs and on run
folders damaged every way the app already copes with."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.pure.events import MetricsWriter
from tui.runs_table import JSON_KEYS

REPO = Path(__file__).resolve().parents[1]
FIXTURE_RUNS = REPO / "tests" / "fixtures" / "runs"


def ls(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tui", "ls", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={**os.environ, "TZ": "UTC", **(env or {})})


def test_table_of_the_fixture_runs_newest_first():
    out = ls("--runs-dir", FIXTURE_RUNS)
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout.splitlines() == [
        "RUN                     STATE      STEP     RANKS  LOSS    VAL LOSS  VAL ACC  STARTED           DURATION  ERROR",
        "20240101-140000-demo-3  stopped    90/150   -      1.5600  1.4000    0.650    2024-01-01 14:00  3m05s     -",
        "20240101-130000-demo-2  failed     60/150   -      1.8500  1.3000    0.650    2024-01-01 13:00  2m05s     "
        "RuntimeError: [metal::malloc] Attempting to allocate 4294967296 bytes which is greater than the maximum "
        "allowed buffer size",
        "20240101-120000-demo    completed  150/150  -      1.0800  1.0500    0.850    2024-01-01 12:00  5m05s     -",
    ]


def test_json_has_the_documented_keys_and_the_runs_lists_values():
    out = ls("--runs-dir", FIXTURE_RUNS, "--json")
    assert out.returncode == 0 and out.stderr == ""
    rows = json.loads(out.stdout)
    assert [tuple(r) for r in rows] == [JSON_KEYS] * 3
    done = rows[2]
    assert done == {
        "run": "20240101-120000-demo", "path": str(FIXTURE_RUNS / "20240101-120000-demo"), "state": "completed",
        "error": None, "step": 150, "total_steps": 150,
        "world_size": None, "ranks": None,  # a run from before the world size was recorded
        "loss": 1.08, "val_loss": 1.05, "val_accuracy": pytest.approx(0.85),
        "started_at": 1704110400.0, "ended_at": 1704110705.0, "duration_s": 305.0,
    }
    # Every key is named in the README's contract, and no other.
    contract = (REPO / "README.md").read_text().split("**`orpo-tui ls --json`**", 1)[1].split("\n\n", 1)[0]
    named = re.findall(r"`([a-z_]+)`", contract)
    assert [k for k in named if k in JSON_KEYS] == list(JSON_KEYS)


def _run(root: Path, name: str, status: bytes | None = None, config: str | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    if status is not None:
        (run / "status.json").write_bytes(status)
    if config is not None:
        (run / "config.toml").write_text(config)
    return run


def test_damaged_run_folders_are_listed_with_one_line_each(tmp_path):
    running = b'{"state": "running", "pid": null, "step": 4, "total_steps": 10, "started_at": 1704110400.0}'
    _run(tmp_path, "20240101-120000-empty-status", b"")
    _run(tmp_path, "20240101-120001-not-json", b"{oops")
    _run(tmp_path, "20240101-120002-wrong-type", b'{"state": "stopped", "step": "four"}')
    _run(tmp_path, "20240101-120003-only-config", config="[training\nbroken")
    unreadable = _run(tmp_path, "20240101-120004-status-is-a-folder", config="")
    (unreadable / "status.json").mkdir()
    bad_metrics = _run(tmp_path, "20240101-120005-bad-metrics", running)
    (bad_metrics / "metrics.jsonl").write_bytes(b"\xff\xfe not json\n" * 3)
    (bad_metrics / "train.log").write_text("Fatal Python error: Segmentation fault\n")
    nan = _run(tmp_path, "20240101-120006-nan", b'{"state": "failed", "step": 2, "total_steps": 10, '
                                                 b'"error": "loss is nan at step 2"}')
    with MetricsWriter(nan / "metrics.jsonl") as w:
        w.write("train", 2, loss=float("nan"))
    (tmp_path / "20240101-120007-not-a-run").mkdir()  # neither config nor status: not listed

    out = ls("--runs-dir", tmp_path, "--json")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    rows = {r["run"].split("-", 2)[2]: r for r in json.loads(out.stdout)}
    assert set(rows) == {"empty-status", "not-json", "wrong-type", "only-config", "status-is-a-folder", "bad-metrics",
                         "nan"}
    assert (rows["empty-status"]["state"], rows["empty-status"]["error"]) == ("unknown", "status.json is empty")
    assert (rows["not-json"]["state"], rows["not-json"]["error"]) == ("unknown", "status.json is not valid JSON")
    assert (rows["wrong-type"]["state"], rows["wrong-type"]["error"]) == ("stopped", 'status.json: step = "four" is not valid')
    assert (rows["only-config"]["state"], rows["only-config"]["error"]) == ("unknown", "no status.json")
    assert rows["status-is-a-folder"]["error"].startswith("status.json: cannot be read: ")
    # A crashed run's cause comes before the damaged metrics it also has.
    assert (rows["bad-metrics"]["state"], rows["bad-metrics"]["error"]) == ("crashed", "Fatal Python error: Segmentation fault")
    assert rows["nan"]["loss"] == "nan" and rows["nan"]["error"] == "loss is nan at step 2"

    table = ls("--runs-dir", tmp_path)
    assert table.returncode == 0 and table.stderr == ""
    lines = table.stdout.splitlines()
    assert len(lines) == 1 + 7  # a header and one line per run, whatever is wrong with it
    assert any("crashed" in ln and ln.endswith("Fatal Python error: Segmentation fault") for ln in lines)
    assert any(" nan " in ln for ln in lines)


def test_no_runs_and_no_folder(tmp_path):
    empty = ls("--runs-dir", tmp_path)
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, "", f"no runs in {tmp_path}\n")
    assert json.loads(ls("--runs-dir", tmp_path, "--json").stdout) == []
    missing = ls("--runs-dir", tmp_path / "nope")
    assert (missing.returncode, missing.stdout) == (2, "")
    assert missing.stderr == f"orpo-tui ls: {tmp_path / 'nope'}: no such runs folder\n"


def test_default_runs_folder_is_the_apps(tmp_path):
    shutil.copytree(FIXTURE_RUNS, tmp_path / "runs")
    (tmp_path / "cfg" / "orpo-tui").mkdir(parents=True)
    (tmp_path / "cfg" / "orpo-tui" / "settings.toml").write_text(f'runs_dir = "{tmp_path / "runs"}"\n')
    out = ls("--json", env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 3


def test_ls_loads_neither_textual_nor_mlx():
    code = ("import sys, contextlib, io\nfrom tui.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): rc = main(['ls', '--runs-dir', {str(FIXTURE_RUNS)!r}])\n"
            "print(rc, 'textual' in sys.modules, 'mlx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False", "False"]
