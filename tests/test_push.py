"""`orpo-train push`: the upload folder (adapters or fused model + model card) and the offline failure."""

import http.server
import math
import os
import shutil
import socket
import subprocess
import threading

import pytest
from trainer_helpers import DEMO, ORPO_TRAIN, REPO, run_trainer

from trainer.pure.events import read_events
from trainer.pure.metrics import ORPO_METRICS
from trainer.pure.run_folder import RunFolder

REPO_ID = "someone/demo-orpo"
# The tiny model stops at once on some prompts: several, so that something is generated.
PROMPTS = ("Give me the opposite of strong.", "What colour is grass?", "Hello")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    proc = run_trainer(str(DEMO), "--runs-dir", str(runs), "--set", "training.iters=30",
                       "--set", "training.steps_per_eval=10", "--set", "training.save_every=10")
    assert proc.returncode == 0, proc.stderr
    return next(runs.iterdir())


def push(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*ORPO_TRAIN, "push", *map(str, args)], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env=env)


def card_table(card: str, heading: str) -> list[list[str]]:
    section = card.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]


def greedy(model_path, adapter_path=None) -> list[str]:
    from mlx_lm import generate, load

    model, tokenizer = load(str(model_path), adapter_path=str(adapter_path) if adapter_path else None)
    return [generate(model, tokenizer, prompt=p, max_tokens=16) for p in PROMPTS]


def base_of(run_dir):
    import tomllib

    return tomllib.loads(RunFolder(run_dir).config.read_text())["model"]["resolved_path"]


def test_dry_run_folder_loads_in_mlx_lm_and_its_card_holds_the_metrics(trained_run, tmp_path):
    out = tmp_path / "upload"
    proc = push(trained_run, "--repo", REPO_ID, "--dry-run", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json", "adapters.safetensors"]

    base = base_of(trained_run)
    answers = greedy(base, out)
    assert any(answers) and answers == greedy(base, RunFolder(trained_run).adapters)
    assert answers != greedy(base)

    card = (out / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: mlx" in front and "- orpo" in front and "- lora" in front
    assert "base_model" not in front  # the built-in base is not a hub id
    assert f'load("{base}", adapter_path=adapters)' in card and f'snapshot_download("{REPO_ID}")' in card

    vals = [e for e in read_events(RunFolder(trained_run).metrics) if e["event"] == "val"]
    final = vals[-1]
    best = min((e for e in vals if math.isfinite(e["loss"])), key=lambda e: e["loss"])
    table = card_table(card, "Validation metrics")
    assert table[0] == ["metric", f"final (step {final['step']})", f"best (step {best['step']})"]
    rows = {r[0].strip("`"): r[1:] for r in table[2:]}
    assert list(rows) == list(ORPO_METRICS)
    for metric, (final_cell, best_cell) in rows.items():
        assert float(final_cell) == final[metric] and float(best_cell) == best[metric], metric

    settings = {r[0].strip("`"): r[1] for r in card_table(card, "ORPO settings")[2:]}
    assert settings["orpo.beta"] == "0.1" and settings["training.iters"] == "30" and settings["finetune.rank"] == "8"
    assert "432 train pairs, 70 validation pairs" in card


def test_best_and_fused_uploads(trained_run, tmp_path):
    best = push(trained_run, "--repo", REPO_ID, "--best", "--dry-run", tmp_path / "best")
    assert best.returncode == 0, best.stderr
    got = (tmp_path / "best" / "adapters.safetensors").read_bytes()
    assert got == RunFolder(trained_run).best_weights.read_bytes()

    missing = push(trained_run, "--repo", REPO_ID, "--fused", "--dry-run", tmp_path / "nofused")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"orpo-train push: {trained_run}: no fused model (fused/); run `orpo-train fuse {trained_run}` first")
    assert not (tmp_path / "nofused").exists()

    run_copy = tmp_path / "run"
    shutil.copytree(trained_run, run_copy)
    assert run_trainer("fuse", str(run_copy)).returncode == 0
    out = tmp_path / "fused"
    proc = push(run_copy, "--repo", REPO_ID, "--fused", "--dry-run", out)
    assert proc.returncode == 0, proc.stderr
    assert "config.json" in {p.name for p in out.iterdir()}
    card = (out / "README.md").read_text()
    assert "- fused" in card.split("---\n")[1] and f'load("{REPO_ID}")' in card
    assert greedy(out) == greedy(base_of(run_copy), RunFolder(run_copy).adapters)


def test_offline_push_fails_in_one_line_and_quickly(trained_run):
    with socket.socket() as s:  # a port nothing listens on: the test never leaves this machine
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{closed}", "HF_HUB_OFFLINE": "0"}
    proc = push(trained_run, "--repo", REPO_ID, "--private", env=env)
    assert proc.returncode == 1
    assert proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"orpo-train push: cannot reach the hub at http://127.0.0.1:{closed}: ConnectError: ")
    assert "Connection refused" in line and line.endswith("; nothing was uploaded")

    offline = push(trained_run, "--repo", REPO_ID, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 1
    assert offline.stderr.strip().splitlines() == ["orpo-train push: HF_HUB_OFFLINE is set: nothing was uploaded"]


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A hub stand-in that refuses every request as huggingface.co refuses a missing token."""

    def _refuse(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": "Invalid credentials in Authorization header"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args):
        pass


def test_a_hub_that_refuses_the_token_gives_one_line(trained_run):
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{hub.server_address[1]}"
        env = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": "hf_not_a_token", "HF_HUB_OFFLINE": "0"}
        proc = push(trained_run, "--repo", REPO_ID, env=env)
    finally:
        hub.shutdown()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        f"orpo-train push: {endpoint}: not logged in (run `hf auth login` or set HF_TOKEN); nothing was uploaded"]


def test_bad_input_lines(trained_run, tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    proc = push(trained_run, "--repo", REPO_ID, "--dry-run", taken)
    assert proc.returncode == 2 and proc.stderr.strip() == f"orpo-train push: --dry-run {taken}: exists and is not an empty folder"
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(RunFolder(trained_run).config, RunFolder(fresh).config)
    proc = push(fresh, "--repo", REPO_ID, "--dry-run", tmp_path / "x")
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"orpo-train push: {fresh}: no saved adapters yet (adapters/adapters.safetensors)"

    proc = push(trained_run, "--repo", "no-owner", "--dry-run", tmp_path / "y")
    assert proc.returncode == 2 and proc.stderr.strip() == "orpo-train push: --repo no-owner: give the owner too, as OWNER/NAME"


def test_card_for_a_hub_base_and_dataset(tmp_path):
    from trainer.pure.config import apply_overrides, dump_toml, load_preset
    from trainer.pure.model_card import render_card

    cfg = apply_overrides(load_preset(DEMO), ["model.path=org/base-model", "data.path=org/prefs", "finetune.type=dora",
                                              "model.quantize.bits=4", "data.apply_chat_template=true"])
    dump_toml(cfg, RunFolder(tmp_path).config)
    card = render_card(cfg, tmp_path, REPO_ID, best=False, fused=False)
    front = card.split("---\n")[1].splitlines()
    assert front[0] == "base_model: org/base-model" and front[-2:] == ["datasets:", "- org/prefs"] and "- dora" in front
    assert 'load("org/base-model", adapter_path=adapters)' in card
    assert "trained on its 4-bit copy (group size 64)" in card and "DoRA adapters" in card
    assert "apply_chat_template([" in card and "--ignore-chat-template" not in card  # it trained through the template
    assert "No validation was run." in card
