"""Run comparison: config diff, summaries, CSV exports and the `orpo-tui` subcommands,
on run folders written the way the trainer writes them."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.pure.config import Config, dump_toml, replace_value
from trainer.pure.events import MetricsWriter
from trainer.pure.runs import atomic_write_json
from tui.compare import (
    CompareError,
    config_diff,
    format_diff,
    load_side,
    metrics_to_csv,
    summaries_to_csv,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000.0
# The two runs differ in two settings; rank also moves PEFT's alpha (scale × rank).
CHANGED_SETTINGS = ["orpo.beta", "finetune.rank"]
CHANGED_DERIVED = ["derived.peft_alpha"]


def _config(beta: float, rank: int) -> Config:
    cfg = replace_value(Config(), "orpo.beta", beta)
    cfg = replace_value(cfg, "finetune.rank", rank)
    # Differs between any two runs; the diff must ignore it.
    return replace_value(cfg, "model.resolved_path", f"/cache/models/{rank}")


def _write_run(runs: Path, name: str, cfg: Config, val_losses: list, **status) -> Path:
    run = runs / name
    run.mkdir(parents=True)
    dump_toml(cfg, run / "config.toml")
    atomic_write_json(run / "status.json", {"state": "completed", "pid": None, "step": 30, **status})
    with MetricsWriter(run / "metrics.jsonl") as w:
        for i, step in enumerate((10, 20, 30)):
            w.write("train", step, time=T0 + step, loss=2.0 - i / 10, pairs_per_second=10.0 * (i + 1),
                    peak_memory_gb=1.0 + i)
        for step, loss in zip((10, 20, 30), val_losses):
            w.write("val", step, time=T0 + step + 1, **{"loss": loss, "rewards/accuracies": 0.5 + step / 100,
                                                         "rewards/margins": step / 10, "log_odds_chosen": -1.0})
        w.write("checkpoint", 30, time=T0 + 32, path="adapters")
    return run


@pytest.fixture
def runs(tmp_path):
    a = _write_run(tmp_path, "20240101-120000-base", _config(0.1, 8), [1.5, 1.2, 1.3],
                   started_at=T0, ended_at=T0 + 40)
    b = _write_run(tmp_path, "20240101-130000-base-2", _config(0.2, 16), [1.4, float("nan"), 1.1],
                   started_at=T0, ended_at=T0 + 100)
    return a, b


def _orpo_tui(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tui", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- diff


def test_diff_of_two_runs_lists_exactly_the_changed_keys(runs):
    rows = config_diff(load_side(runs[0]), load_side(runs[1]), only_changed=True)
    assert [r.key for r in rows] == CHANGED_SETTINGS + CHANGED_DERIVED
    by_key = {r.key: r for r in rows}
    assert (by_key["orpo.beta"].a, by_key["orpo.beta"].b) == ("0.1", "0.2")
    assert (by_key["finetune.rank"].a, by_key["finetune.rank"].b) == ("8", "16")
    assert (by_key["derived.peft_alpha"].a, by_key["derived.peft_alpha"].b) == ("160.0", "320.0")
    assert [r.derived for r in rows] == [False, False, True]


def test_full_diff_covers_every_setting_but_resolved_path(runs):
    rows = config_diff(load_side(runs[0]), load_side(runs[1]))
    keys = [r.key for r in rows]
    assert "model.resolved_path" not in keys
    assert {"training.iters", "finetune.keys", "derived.effective_batch", "derived.implied_epochs",
            "derived.lora_scale", "derived.base_bits", "derived.qat_bits"} <= set(keys)
    assert sorted(r.key for r in rows if r.changed) == sorted(CHANGED_SETTINGS + CHANGED_DERIVED)
    # The builtin demo data has a known size, so the epochs are a number, not "?".
    epochs = next(r for r in rows if r.key == "derived.implied_epochs")
    assert epochs.a != "?" and float(epochs.a) > 0


def test_run_against_preset(runs, tmp_path):
    preset = tmp_path / "wide.toml"
    dump_toml(replace_value(Config(), "training.batch_size", 4), preset, only_changed=True)
    a, b = load_side(runs[0]), load_side(preset)
    assert (a.is_run, b.is_run, b.label) == (True, False, "wide")
    keys = [r.key for r in config_diff(a, b, only_changed=True)]
    # The run has beta 0.1 and rank 8 (the defaults), so only the batch and what it drives differ.
    assert keys == ["training.batch_size", "derived.effective_batch", "derived.implied_epochs"]


def test_load_side_rejects_what_is_neither_a_run_nor_a_preset(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    for path, expected in [("empty", "not a run directory"), ("notes.txt", r"preset \(\.toml\)"),
                           ("missing", "no such run directory or preset file")]:
        with pytest.raises(CompareError, match=expected) as info:
            load_side(tmp_path / path)
        assert "\n" not in str(info.value)


def test_format_diff_marks_changed_rows_and_counts_them(runs):
    rows = config_diff(load_side(runs[0]), load_side(runs[1]))
    plain = format_diff(rows, "A", "B", color=False, width=80)
    lines = plain.splitlines()
    assert [cell.strip() for cell in lines[0].split("|")] == ["key", "A", "B"]
    assert all(len(line) <= 80 for line in lines)
    assert sorted(line.split()[1] for line in lines if line.startswith("*")) == sorted(CHANGED_SETTINGS + CHANGED_DERIVED)
    assert lines[-1] == "3 keys differ (1 derived)"
    assert "\x1b[" not in plain
    colored = format_diff(rows, "A", "B", color=True)
    assert colored.count("\x1b[1;33m") == 3


def test_cli_diff_plain_output(runs):
    out = _orpo_tui("diff", *runs)  # captured: not a TTY, so no colour
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stdout
    lines = out.stdout.splitlines()
    assert runs[0].name in lines[0] and runs[1].name in lines[0]
    body = lines[2:-1]
    assert [line.split()[1] for line in body] == CHANGED_SETTINGS + CHANGED_DERIVED
    assert all(line.startswith("*") for line in body)
    assert lines[-1] == "3 keys differ (1 derived)"
    every = _orpo_tui("diff", "--all", *runs).stdout.splitlines()
    assert len(every) > 40 and every[-1] == lines[-1]


def test_cli_bad_path_exits_2_with_one_line(runs, tmp_path):
    for args in (("diff", runs[0], tmp_path / "nope"), ("export", tmp_path / "nope"),
                 ("summary", tmp_path / "nope")):
        out = _orpo_tui(*args)
        assert out.returncode == 2, args
        assert out.stdout == ""
        assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith(f"orpo-tui {args[0]}: ")


def test_subcommands_do_not_load_textual(runs):
    code = ("import sys, contextlib, io\nfrom tui.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): rc = main(['diff', {str(runs[0])!r}, {str(runs[1])!r}])\n"
            "print(rc, 'textual' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"]


# --------------------------------------------------------------------------- summary


def test_summarize_picks_best_val_loss_and_its_step(runs):
    a, b = summarize(runs[0]), summarize(runs[1])
    assert (a["best_val_loss"], a["best_val_step"], a["final_val_loss"]) == (1.2, 20, 1.3)
    # A NaN evaluation is never the best one.
    assert (b["best_val_loss"], b["best_val_step"]) == (1.1, 30)
    assert a["run"] == runs[0].name and a["preset"] == "base" and b["preset"] == "base"
    assert (a["state"], a["steps"]) == ("completed", 30)
    assert a["final_val_accuracy"] == pytest.approx(0.8)
    assert a["final_val_margin"] == pytest.approx(3.0)
    assert a["final_val_log_odds_chosen"] == -1.0
    assert a["mean_pairs_per_second"] == pytest.approx(20.0)
    assert a["max_peak_memory_gb"] == 3.0
    assert (a["duration_s"], b["duration_s"]) == (40.0, 100.0)


def test_summarize_of_an_empty_run_is_all_none(tmp_path):
    run = tmp_path / "20240101-000000-x"
    run.mkdir()
    s = summarize(run)
    assert s["state"] == "unknown" and s["preset"] == "x"
    assert all(s[k] is None for k in s if k not in ("run", "preset", "state"))


def test_summarize_keeps_the_resumed_attempt(tmp_path):
    # Crashed after the val at 20; resumed from the checkpoint at 10 and evaluated again.
    run = tmp_path / "r"
    run.mkdir()
    with MetricsWriter(run / "metrics.jsonl") as w:
        w.write("val", 10, time=T0, loss=2.0)
        w.write("val", 20, time=T0 + 1, loss=0.5)
        w.write("val", 20, time=T0 + 2, loss=1.5)
    assert summarize(run)["best_val_loss"] == 1.5


def test_summaries_csv_round_trip(runs):
    rows = [summarize(r) for r in runs]
    back = list(csv.DictReader(io.StringIO(summaries_to_csv(rows))))
    assert [r["run"] for r in back] == [r.name for r in runs]
    assert list(back[0]) == list(rows[0])
    assert float(back[0]["best_val_loss"]) == rows[0]["best_val_loss"]
    assert int(back[1]["best_val_step"]) == 30
    assert float(back[1]["final_val_loss"]) == rows[1]["final_val_loss"]


def test_cli_summary_table_and_csv(runs):
    table = _orpo_tui("summary", *runs)
    assert table.returncode == 0, table.stderr
    best = next(line for line in table.stdout.splitlines() if line.startswith("best_val_loss"))
    assert best.split()[1:] == ["1.2", "1.1"]
    as_csv = _orpo_tui("summary", "--csv", *runs)
    assert len(list(csv.DictReader(io.StringIO(as_csv.stdout)))) == 2


def test_cli_summary_of_the_runs_folder_and_of_a_glob_skips_what_is_not_a_run(runs, tmp_path):
    (tmp_path / "compare-20240101-000000.csv").write_text("run,preset\nx,y\n")  # an older app's export
    everything = _orpo_tui("summary", "--csv", "--runs-dir", tmp_path)
    assert everything.returncode == 0, everything.stderr
    assert [r["run"] for r in csv.DictReader(io.StringIO(everything.stdout))] == [r.name for r in runs]
    globbed = _orpo_tui("summary", "--csv", *sorted(tmp_path.iterdir()))
    assert globbed.returncode == 0, globbed.stderr
    assert [r["run"] for r in csv.DictReader(io.StringIO(globbed.stdout))] == [r.name for r in runs]
    assert globbed.stderr.splitlines() == [
        f"orpo-tui summary: {tmp_path / 'compare-20240101-000000.csv'}: not a run directory; skipped"]


def test_summary_names_a_sweep_runs_preset(tmp_path):
    runs = tmp_path / "runs"
    cfg = replace_value(_config(0.1, 8), "output.name", "beta-0.1-rank-8")
    run = _write_run(runs, "20260101-120000-beta-0.1-rank-8", cfg, [1.0])
    assert summarize(run)["preset"] == "beta-0.1-rank-8"  # not "beta-0.1-rank": -8 is no collision suffix
    (runs / "queue.json").write_text(json.dumps({"items": [
        {"id": "abc", "preset": str(tmp_path / "presets" / "base.toml"), "label": "beta=0.1,rank=8",
         "state": "completed", "run_dir": str(run)}]}))
    assert summarize(run)["preset"] == "base"  # the sweep's preset, as the queue recorded it


def test_duration_of_a_resumed_run_counts_its_attempts_not_the_gap_between(tmp_path):
    run = tmp_path / "20240101-120000-base"
    run.mkdir()
    atomic_write_json(run / "status.json", {"state": "completed", "pid": None, "step": 30,
                                            "started_at": T0, "ended_at": T0 + 1030})
    with MetricsWriter(run / "metrics.jsonl") as w:
        w.write("status", 0, time=T0 + 1, state="running", resumed=False)
        w.write("train", 10, time=T0 + 20, loss=1.0)
        w.write("status", 10, time=T0 + 1000, state="running", resumed=True)  # resumed the next day
        w.write("train", 30, time=T0 + 1020, loss=0.9)
    assert summarize(run, now=T0 + 5000)["duration_s"] == 50.0  # 20 s, then 30 s
    atomic_write_json(run / "summary.json", {"state": "completed", "steps_done": 30, "wall_time_s": 47.5})
    assert summarize(run)["duration_s"] == 47.5  # the trainer's own clock when it has one


# --------------------------------------------------------------------------- metrics CSV


def test_metrics_csv_has_union_columns_and_nan(runs):
    text = metrics_to_csv(runs[1])
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames[:3] == ["event", "step", "time"]
    assert set(reader.fieldnames[3:]) == {"loss", "pairs_per_second", "peak_memory_gb", "rewards/accuracies",
                                          "rewards/margins", "log_odds_chosen"}
    rows = list(reader)
    assert [r["event"] for r in rows] == ["train"] * 3 + ["val"] * 3  # no checkpoint rows
    assert rows[0]["rewards/margins"] == "" and rows[3]["pairs_per_second"] == ""
    assert rows[4]["loss"] == "nan"
    assert float(rows[5]["loss"]) == 1.1 and float(rows[0]["time"]) == T0 + 10


def test_cli_export_to_stdout_and_file(runs, tmp_path):
    out = _orpo_tui("export", runs[0])
    assert out.returncode == 0 and out.stdout == metrics_to_csv(runs[0])
    target = tmp_path / "m.csv"
    assert _orpo_tui("export", runs[0], "--out", target).stdout == ""
    assert target.read_text() == out.stdout
