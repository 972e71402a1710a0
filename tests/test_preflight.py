"""Dataset preflight: the trainer's JSON report, the `orpo-train preflight` CLI, and the
app-side client that runs it in a subprocess."""

import json
import subprocess
import sys

import pytest
from trainer_helpers import REPO, run_trainer

from trainer.builtin import DEMO_DATA_DIR
from trainer.preflight import preflight
from trainer.pure.config import config_from_dict
from tui import preflight_client
from tui.preflight_client import PreflightError, format_report, run_preflight


def cfg_for(**data):
    return config_from_dict({"data": {k: str(v) if k == "path" else v for k, v in data.items()}}, "test")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_preset(tmp_path, data_path, extra=""):
    preset = tmp_path / "exp.toml"
    preset.write_text(f'[data]\npath = "{data_path}"\n{extra}')
    return preset


SCORED = [
    {"id": i, "prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"BAD {i}", "preference_score": s}
    for i, s in enumerate([0.2, 1.3, -0.5, 0.9, 0.5, 1.0, 0.7, 0.4, 0.8, 0.6])
]


@pytest.fixture(scope="module")
def tokenizer():
    from mlx_lm.utils import load_tokenizer

    from trainer.builtin import resolve_builtin_model

    return load_tokenizer(resolve_builtin_model("builtin:tiny"))


def demo_rows(split):
    lines = (DEMO_DATA_DIR / f"{split}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---------------------------------------------------------------------------- the report


def test_demo_report_counts_columns_and_first_row(tokenizer):
    report = preflight(cfg_for())
    assert report["error"] is None and report["warnings"] == []
    assert report["splits"] == {"train": len(demo_rows("train")), "valid": len(demo_rows("valid")), "valid_held_out": False}
    assert report["format"] == "prompt"
    assert report["columns"]["found"] == ["prompt", "chosen", "rejected"]
    assert report["columns"]["missing"] == [] and report["columns"]["unused"] == []
    assert report["preference_score"] is None
    assert report["over_max_seq_length"]["train"] == {"count": 0, "share": 0.0}
    assert report["tokens"]["train"]["longest"] <= report["max_seq_length"]
    assert json.loads(json.dumps(report)) == report

    first = demo_rows("train")[0]
    segments = report["first_row"]["segments"]
    assert report["first_row"]["origin"].endswith("train.jsonl: row 1")
    assert [(s["role"], s["scored"]) for s in segments] == [("prompt", False), ("chosen", True), ("rejected", True)]
    eos = tokenizer.decode([tokenizer.eos_token_id])
    text = {s["role"]: s["text"] for s in segments}
    assert text == {"prompt": first["prompt"], "chosen": first["chosen"] + eos, "rejected": first["rejected"] + eos}


@pytest.mark.parametrize("max_seq_length", [256, 24])
def test_report_carries_the_memory_estimate_at_the_lengths_training_cuts_to(max_seq_length):
    """The data check's memory figure is `orpo-train estimate`'s, also when pairs are cut."""
    from trainer.estimate_cli import estimate_report

    cfg = cfg_for(max_seq_length=max_seq_length)
    memory = preflight(cfg)["memory"]
    expected = estimate_report(cfg)
    assert memory["peak_memory_gb"] == expected["peak_memory_gb"]
    assert memory["peak_memory_gb_worst"] == expected["peak_memory_gb_worst"]
    assert memory["fits"] is True and memory["device_memory_gb"] > 0
    assert any(line.startswith("memory: fits: est ") for line in format_report(preflight_client.PreflightReport.from_dict(
        {"memory": memory})))


def test_scores_outside_0_1_extra_columns_and_held_out_valid(tmp_path):
    report = preflight(cfg_for(path=write_jsonl(tmp_path / "pairs.jsonl", SCORED), valid_fraction=0.2))
    assert report["error"] is None
    ps = report["preference_score"]
    assert (ps["min"], ps["max"], ps["outside_0_1"]) == (-0.5, 1.3, 2)
    assert report["columns"]["unused"] == ["id"]
    assert report["splits"] == {"train": 8, "valid": 2, "valid_held_out": True}
    assert any("outside 0..1" in w for w in report["warnings"])
    assert any("no validation split" in w for w in report["warnings"])


def test_small_max_seq_length_counts_what_training_truncates(tmp_path, tokenizer):
    from trainer.data import load_splits, tokenize_rows

    cfg = cfg_for(max_seq_length=24)
    report = preflight(cfg)
    over = report["over_max_seq_length"]["train"]
    assert over["count"] > 0 and 0 < over["share"] <= 1
    truncated = tokenize_rows(load_splits(cfg.data, 0).train, tokenizer, 24)[1].truncated
    assert over["count"] == truncated
    assert any("will be truncated" in w and "train" in w for w in report["warnings"])
    chosen_side = [s for s in report["first_row"]["segments"] if s["role"] != "rejected"]
    assert sum(s["tokens"] for s in chosen_side) <= 24


def test_flat_rows_leave_the_first_token_unscored(tmp_path):
    rows = [{"good": f"yes {i}", "bad": f"no {i}"} for i in range(10)]
    cfg = cfg_for(path=write_jsonl(tmp_path / "flat.jsonl", rows), chosen_feature="good", rejected_feature="bad")
    report = preflight(cfg)
    assert report["format"] == "flat" and report["error"] is None
    first = report["first_row"]["segments"][0]
    assert (first["role"], first["scored"], first["tokens"]) == ("chosen", False, 1)
    assert all(s["role"] != "prompt" for s in report["first_row"]["segments"])


def test_model_error_keeps_the_data_facts(tmp_path):
    cfg = config_from_dict({"model": {"path": str(tmp_path / "nowhere")}}, "test")
    report = preflight(cfg)
    assert "model.path" in report["error"]
    assert report["splits"]["train"] == len(demo_rows("train")) and report["tokens"] is None


# ---------------------------------------------------------------------------- the CLI


def test_cli_missing_column_exits_2_with_the_columns_found(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", [{"prompt": "Hi?", "chosen": "Hello."}] * 4)
    proc = run_trainer("preflight", str(write_preset(tmp_path, folder)))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1
    report = json.loads(proc.stdout)
    assert "'rejected'" in report["error"] and "\n" not in report["error"]
    assert report["columns"]["found"] == ["prompt", "chosen"]
    assert report["columns"]["missing"] == ["rejected"]
    assert report["splits"] is None


def test_cli_config_error_is_a_report_too(tmp_path):
    preset = tmp_path / "bad.toml"
    preset.write_text("[data]\nmax_seq_lenght = 3\n")
    proc = run_trainer("preflight", str(preset), "--set", "training.iters=5")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert "max_seq_lenght" in report["error"] and report["splits"] is None


# ---------------------------------------------------------------------------- the client


def test_client_parses_a_report_and_formats_it(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", SCORED)
    write_jsonl(folder / "valid.jsonl", SCORED[:3])
    report = run_preflight(write_preset(tmp_path, folder), ["data.max_seq_length=8"])
    assert report.ok and report.format == "prompt"
    assert report.splits["train"] == 10 and report.splits["valid"] == 3
    assert [s.role for s in report.segments][0] == "prompt" and not report.segments[0].scored
    lines = format_report(report)
    assert "train: 10 rows · valid: 3 rows" in lines
    assert "columns: prompt, chosen, rejected, preference_score (extra ignored: id)" in lines
    assert "preference_score: -0.50 … 1.30, mean 0.53 (4 rows outside 0..1)" in lines
    assert any(line.startswith("over max_seq_length 8: train ") for line in lines)
    assert any(line.startswith("warning: ") and "outside 0..1" in line for line in lines)
    assert all("\n" not in line for line in lines)


def test_client_returns_the_error_report_for_bad_data(tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "Hi?", "chosen": "Hello."}])
    report = run_preflight(write_preset(tmp_path, bad))
    assert not report.ok and "'rejected'" in report.error
    lines = format_report(report)
    assert lines[0].startswith("error: ") and "missing columns: rejected (found: prompt, chosen)" in lines


@pytest.mark.parametrize(
    "code, timeout, needle",
    [
        ("import sys; print('Traceback...', file=sys.stderr); print('ValueError: boom', file=sys.stderr); sys.exit(1)", 30,
         "exit 1): ValueError: boom"),
        ("print('not json')", 30, "no JSON report"),
        ("import time; time.sleep(30)", 0.5, "timed out after 0.5 s"),
    ],
)
def test_client_reports_a_missing_report_in_one_line(monkeypatch, tmp_path, code, timeout, needle):
    monkeypatch.setattr(preflight_client, "preflight_command", lambda *_: [sys.executable, "-c", code])
    with pytest.raises(PreflightError) as info:
        run_preflight(tmp_path / "x.toml", timeout=timeout)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_client_imports_nothing_heavy():
    code = (
        "import json, sys\nimport tui.preflight_client\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'datasets', 'textual', 'numpy'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
