"""Bad input: exit 2, one line on stderr naming the file, key or row, no traceback, and no
run left looking like it is still running."""

import json

import pytest
from trainer_helpers import DEMO, run_trainer

from trainer.pure.runs import list_runs, read_status


def preset(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def data_folder(tmp_path, rows, raw_line=None):
    folder = tmp_path / "data"
    folder.mkdir()
    lines = [json.dumps(r) for r in rows] + ([raw_line] if raw_line else [])
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder


GOOD_ROW = {"prompt": "Hi?", "chosen": "Hello there.", "rejected": "GO AWAY."}

CONFIG_CASES = {
    "toml_syntax": ("[training]\niters = = 3\n", [], ["exp.toml", "line 2"]),
    "unknown_key": ("[training]\nlearnig_rate = 0.1\n", [], ["exp.toml", "learnig_rate", "learning_rate"]),
    "wrong_type": ("[training]\niters = \"ten\"\n", [], ["exp.toml", "training.iters"]),
    "negative_lr": ("[training]\nlearning_rate = -1e-5\n", [], ["exp.toml", "training.learning_rate"]),
    "negative_beta": ("[orpo]\nbeta = -0.5\n", [], ["exp.toml", "orpo.beta"]),
    "rank_zero": ("[finetune]\nrank = 0\n", [], ["exp.toml", "finetune.rank"]),
    "bad_set_value": ("", ["--set", "training.iters=abc"], ["--set", "training.iters"]),
    "unknown_set_key": ("", ["--set", "training.itters=5"], ["--set", "training.itters"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_errors_exit_2_before_any_run_exists(tmp_path, case):
    text, extra, needles = CONFIG_CASES[case]
    path = preset(tmp_path, text)
    proc = run_trainer(str(path), "--runs-dir", str(tmp_path / "runs"), *extra)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    for needle in needles:
        assert needle in line, (needle, line)
    assert not (tmp_path / "runs").exists() or not list_runs(tmp_path / "runs")


def test_missing_preset_file(tmp_path):
    proc = run_trainer(str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert "nope.toml" in proc.stderr and proc.stderr.strip().count("\n") == 0


DATA_CASES = {
    "missing_dataset_path": (None, None, ["data.path", "no such file or folder"]),
    "no_rejected_column": ([{"prompt": "Hi?", "chosen": "Hello."}] * 10, None, ["train.jsonl", "no 'rejected' column"]),
    "malformed_jsonl_row": ([GOOD_ROW] * 10, '{"prompt": "x", "chosen": ', ["train.jsonl", "row 11", "not valid JSON"]),
    "empty_rejected": ([GOOD_ROW] * 3 + [{**GOOD_ROW, "rejected": " "}], None, ["train.jsonl", "row 4", "'rejected' is empty"]),
    "empty_train_file": ([], None, ["train.jsonl", "is empty (no rows)"]),
    # Finite in float64 but inf in float32, where scores live on the device.
    "score_over_float32": ([GOOD_ROW] * 3 + [{**GOOD_ROW, "preference_score": 1e308}] + [GOOD_ROW] * 8, None,
                           ["train.jsonl", "row 4", "'preference_score' must be a finite float32 number"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_errors_exit_2_and_mark_the_run_failed(tmp_path, case):
    rows, raw, needles = DATA_CASES[case]
    data_path = data_folder(tmp_path, rows, raw) if rows is not None else tmp_path / "missing"
    path = preset(tmp_path, f'[data]\npath = "{data_path}"\n')
    proc = run_trainer(str(path), "--runs-dir", str(tmp_path / "runs"))
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    for needle in needles:
        assert needle in line, (needle, line)
    (run_dir,) = list_runs(tmp_path / "runs")
    status = read_status(run_dir)
    assert status["state"] == "failed" and status["error"] in line


def test_qat_with_no_layer_to_quantize_is_refused(tmp_path):
    # QAT exists (tests/test_qat.py); a group size that divides no layer's input width (the
    # tiny model's are 64 and 192) would fake-quantize nothing, like the deployment quantizer:
    # refused with one line instead of silently training without QAT.
    proc = run_trainer(str(DEMO), "--runs-dir", str(tmp_path / "runs"), "--set", "qat.enable=true", "--set", "qat.group_size=128")
    assert proc.returncode == 2, proc.stderr
    assert "qat.group_size = 128" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_resume_refuses_a_non_run_and_frozen_keys(tmp_path):
    proc = run_trainer("--resume", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr
    (tmp_path / "config.toml").write_text("")
    proc = run_trainer("--resume", str(tmp_path), "--set", "orpo.beta=0.5")
    assert proc.returncode == 2 and "cannot be changed on resume" in proc.stderr


def test_a_trainer_that_cannot_load_mlx_leaves_a_failed_run_with_its_reason(tmp_path):
    # A broken MLX install: the run folder must still hold its config and a status that says
    # failed with the reason, so the app lists it instead of skipping a folder with only a log.
    import os
    import subprocess
    import sys

    from trainer.pure.run_folder import RunFolder
    from trainer.pure.runs import effective_state
    from tui.runs_index import RunsIndex

    fake = tmp_path / "fake"
    (fake / "mlx").mkdir(parents=True)
    (fake / "mlx" / "__init__.py").write_text("raise ImportError('simulated broken MLX install')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(DEMO.parents[1])])}
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "trainer", str(DEMO), "--runs-dir", str(runs), "--log-only"],
                         capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert out.returncode == 1
    run = RunFolder(out.stdout.splitlines()[0])
    assert run.config.is_file()
    status = read_status(run.root)
    assert status["state"] == "failed" and status["pid"] is not None
    assert "simulated broken MLX install" in status["error"]
    assert effective_state(status) == "failed"
    assert "simulated broken MLX install" in run.log.read_text()
    (listed,) = RunsIndex(runs).refresh()
    assert listed.state == "failed" and "simulated broken MLX install" in listed.error


def test_a_runs_folder_that_cannot_be_written_is_one_line(tmp_path):
    # A read-only or full runs folder (a path through a file stands in: root writes anywhere).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_trainer(str(DEMO), "--runs-dir", str(blocker / "runs"))
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line == f"orpo-train: {blocker / 'runs'}: Not a directory"
