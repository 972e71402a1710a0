"""Our ORPO trainer against mlx-lm-lora's (the peer), on the same model, data and settings.

    .venv/bin/python bench/trainer_vs_peer.py [--rounds 2] [--peer-python PY] [--only tiny|large]

Install the peer first: `pip install -e '.[bench]'` (or `pip install mlx-lm-lora`). When the
peer lives in another environment, pass its interpreter with --peer-python.

What it does, all offline:
- models: `builtin:tiny` (hidden 64, 4 layers, vocab 1024) and a larger qwen3 built here
  (hidden 512, 8 layers, vocab 8192, random weights from a fixed seed). The larger model
  reuses the tiny model's byte-level BPE tokenizer files (1024 real tokens); its embedding and
  tied LM head have 8192 rows, so the compute and memory are those of an 8k vocabulary.
- data: a synthetic preference set shaped like real ones (prompts about as long as the
  completions, completions of 20-120 tokens), prompt/chosen/rejected; 48 train rows for the
  tiny model, 6 for the large one, 8 valid rows.
- runs both trainers interleaved (ours, peer, ours, peer, ...) with identical model, data,
  batch size, max_seq_length, LoRA rank/scale/all layers, optimizer (Adam; ours is AdamW with
  weight_decay 0, no clipping), constant learning rate, no validation during training, no
  samples, no checkpoint inside the timed windows.
- timing: both trainers report averaged metrics once per epoch. Pairs differ in cost by up to
  4x, so each timed window is one whole epoch: the same pairs for both trainers, each in its
  own order. The first epoch is warm-up (every batch shape compiled, allocator warmed); the
  run ends one step after the timed epochs and that last window is dropped (the peer always
  runs a validation right before its last step, which resets its timer mid-window). Ours: `pairs_per_second` of
  metrics.jsonl train events; the peer:
  `it/s x batch size` parsed from its `Iter N: loss ..., it/s X, tok/s Y, peak_mem Z GB` lines.
  Peak memory: `peak_memory_gb` (ours, last train event) and `peak_mem` (peer, last report);
  both are mx.get_peak_memory() of the whole process.
- shim: on Linux CPU the peer's ORPO trainer calls
  `mx.set_wired_limit(mx.device_info()["max_recommended_working_set_size"])`, and MLX's CPU
  device_info has no such key (KeyError). The benchmark writes a small wrapper script into a
  temp dir that adds the key (value 0: no wired limit, which is what CPU has anyway) to
  mx.device_info / mx.metal.device_info and then calls `mlx_lm_lora.train.main()` with the
  argv. Nothing in the peer's installed package is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

SHIM = '''\
import sys
import mlx.core as mx

KEY = "max_recommended_working_set_size"

def _wrap(fn):
    def device_info(*a, **k):
        info = dict(fn(*a, **k))
        info.setdefault(KEY, 0)  # CPU: no wired-memory limit to set
        return info
    return device_info

mx.device_info = _wrap(mx.device_info)
if hasattr(mx, "metal") and hasattr(mx.metal, "device_info"):
    mx.metal.device_info = _wrap(mx.metal.device_info)

from mlx_lm_lora.train import main

sys.argv = ["mlx_lm_lora.train"] + sys.argv[1:]
main()
'''

# Settings per model. Pairs differ in length (so in cost) by up to 4x, so a timed window must
# hold the same pairs for both trainers: each window is one whole epoch (every train pair once,
# in each trainer's own order). One epoch of warm-up (compiling every batch shape), then
# `epochs` timed epochs, then one more step, whose window is dropped: the peer runs a
# validation right before its last step, which resets its timer mid-window.
SETTINGS = {
    "tiny": dict(batch_size=8, train_rows=48, epochs=2, max_seq_length=512, lr=1e-3),
    # ~8-20 s per pair on a 2-core CPU: one timed epoch of 6 pairs keeps the bench near 15 min.
    "large": dict(batch_size=1, train_rows=6, epochs=1, max_seq_length=512, lr=1e-4),
}
for _s in SETTINGS.values():
    _s["report"] = _s["train_rows"] // _s["batch_size"]  # steps per epoch
    _s["warmup"] = _s["report"]
    _s["iters"] = _s["report"] * (1 + _s["epochs"]) + 1
LORA = dict(rank=8, scale=20.0, dropout=0.0)

def large_config() -> dict:
    """The built-in tiny model's qwen3 config, scaled up: only the sizes differ."""
    from trainer.builtin.tiny_model import MODEL_CONFIG

    return {**MODEL_CONFIG, "hidden_size": 512, "num_hidden_layers": 8, "intermediate_size": 1536,
            "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64, "vocab_size": 8192}


# ------------------------------------------------------------------ models and data


def tiny_model() -> Path:
    from trainer.builtin import resolve_builtin_model

    return Path(resolve_builtin_model("builtin:tiny"))


def large_model(cache: Path, sizes: dict | None = None) -> Path:
    """A qwen3 of the built-in model's recipe with `sizes` (default: `large_config()`, hidden
    512, 8 layers, vocab 8192); the tiny model's tokenizer files; cached by recipe."""
    import hashlib
    import shutil

    tiny = tiny_model()
    tiny_cfg = json.loads((tiny / "config.json").read_text())
    cfg = large_config() if sizes is None else {**large_config(), **sizes}
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if k in tiny_cfg:
            cfg[k] = tiny_cfg[k]
    key = hashlib.sha256(json.dumps([cfg, tiny.name], sort_keys=True).encode()).hexdigest()[:10]
    dest = cache / f"qwen3-h{cfg['hidden_size']}-l{cfg['num_hidden_layers']}-v{cfg['vocab_size']}-{key}"
    if (dest / "model.safetensors").is_file():
        return dest
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen3

    tmp = cache / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(tiny / name, tmp / name)
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    mx.random.seed(4321)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(cfg))
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    mx.save_safetensors(str(tmp / "model.safetensors"), weights)
    shutil.rmtree(dest, ignore_errors=True)
    os.rename(tmp, dest)
    return dest


def make_dataset(dest: Path, tokenizer_file: Path, n_train: int = 320, n_valid: int = 40) -> dict:
    """Deterministic synthetic preference rows. Lengths are targets in the model's tokens."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    corpus = (ROOT / "trainer" / "builtin" / "corpus.txt").read_text(encoding="utf-8")
    words = [w for w in re.findall(r"[A-Za-z']+", corpus) if len(w) > 1]
    rng = random.Random(0)

    def text(start: str, n_tokens: int, upper: bool = False) -> str:
        out = start
        while len(tok.encode(out).ids) < n_tokens:
            chunk = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12)))
            out += " " + (chunk.upper() if upper else chunk) + rng.choice([".", ",", "!", "?"])
        return out

    def row() -> dict:
        n = rng.randint(20, 120)
        return {
            "prompt": text("Please explain:", rng.randint(max(10, n - 30), n + 30)),
            "chosen": text("Certainly! Here is a careful answer:", n),
            "rejected": text("UGH, FINE:", rng.randint(20, 120), upper=True),
        }

    dest.mkdir(parents=True, exist_ok=True)
    lengths = {"prompt": [], "chosen": [], "rejected": []}
    for name, n in (("train", n_train), ("valid", n_valid)):
        rows = [row() for _ in range(n)]
        with open(dest / f"{name}.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
                if name == "train":
                    for k in lengths:
                        lengths[k].append(len(tok.encode(r[k]).ids))
    return {k: (min(v), round(statistics.mean(v)), max(v)) for k, v in lengths.items()}


# ------------------------------------------------------------------ runners


def run_ours(model: Path, data: Path, s: dict, work: Path) -> dict:
    preset = work / "bench.toml"
    preset.write_text(
        f'''[model]
path = "{model}"
[data]
path = "{data}"
max_seq_length = {s["max_seq_length"]}
apply_chat_template = true
[orpo]
beta = 0.1
[finetune]
type = "lora"
rank = {LORA["rank"]}
scale = {LORA["scale"]}
dropout = {LORA["dropout"]}
num_layers = -1
[training]
iters = {s["iters"]}
batch_size = {s["batch_size"]}
learning_rate = {s["lr"]}
weight_decay = 0.0
max_grad_norm = 0.0
steps_per_report = {s["report"]}
steps_per_eval = 0
save_every = {s["iters"] + 1000}
sample_prompts = 0
seed = 0
'''
    )
    runs = work / "runs"
    cmd = [sys.executable, "-m", "trainer", str(preset), "--runs-dir", str(runs),
           "--set", "training.steps_per_eval=0", "--set", "training.sample_prompts=0"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ours failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    run_dir = Path(proc.stdout.splitlines()[0].strip())
    events = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == "train":
            events.append(e)
    windows = {e["step"]: e for e in events}
    return {
        "pps": [windows[k]["pairs_per_second"] for k in measured_steps(s)],
        "peak": events[-1]["peak_memory_gb"],
        "loss": {k: e["loss"] for k, e in windows.items()},
        "acc": {k: e["rewards/accuracies"] for k, e in windows.items()},
        "wall": wall,
    }


PEER_LINE = re.compile(
    r"Iter (\d+): loss ([-\d.naif]+), chosen_r [^,]+, rejected_r [^,]+, acc ([-\d.naif]+), .*?"
    r"it/s ([\d.]+), tok/s ([\d.]+), peak_mem ([\d.]+)GB"
)


def run_peer(peer_python: str, shim: Path, model: Path, data: Path, s: dict, work: Path) -> dict:
    cfg = work / "peer.yaml"
    cfg.write_text(
        "lora_parameters:\n"
        f"  rank: {LORA['rank']}\n  scale: {LORA['scale']}\n  dropout: {LORA['dropout']}\n"
        "fuse: false\n"
    )
    cmd = [peer_python, str(shim), "-c", str(cfg), "--train", "--train-mode", "orpo", "--train-type", "lora",
           "--model", str(model), "--data", str(data), "--batch-size", str(s["batch_size"]),
           "--iters", str(s["iters"]), "--learning-rate", str(s["lr"]), "--max-seq-length", str(s["max_seq_length"]),
           "--num-layers", "-1", "--optimizer", "adam", "--beta", "0.1", "--seed", "0",
           "--steps-per-report", str(s["report"]), "--steps-per-eval", str(s["iters"] + 1000),
           "--val-batches", "1", "--save-every", str(s["iters"] + 1000),
           "--adapter-path", str(work / "adapters")]
    env = dict(os.environ, NO_COLOR="1", TQDM_DISABLE="1")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    out = proc.stdout + "\n" + proc.stderr
    (work / "peer.log").write_text(out)  # its settings and trainable-parameter count, for the record
    if proc.returncode != 0:
        raise RuntimeError(f"peer failed ({proc.returncode}):\n{out[-4000:]}")
    reports = {}
    for m in PEER_LINE.finditer(re.sub(r"\x1b\[[0-9;]*m", "", out)):
        it = int(m.group(1))
        reports[it] = dict(loss=float(m.group(2)), acc=float(m.group(3)), its=float(m.group(4)), peak=float(m.group(6)))
    if not reports:
        raise RuntimeError(f"peer: no report lines found:\n{out[-4000:]}")
    return {
        "pps": [reports[k]["its"] * s["batch_size"] for k in measured_steps(s)],
        "peak": reports[max(reports)]["peak"],
        "loss": {k: r["loss"] for k, r in reports.items()},
        "acc": {k: r["acc"] for k, r in reports.items()},
        "wall": wall,
    }


def measured_steps(s: dict) -> list[int]:
    """Report steps whose windows are timed: the epochs after the warm-up one."""
    return [s["report"] * (1 + e) for e in range(1, s["epochs"] + 1)]


# ------------------------------------------------------------------ main


def bench_one(name: str, model: Path, data: Path, s: dict, rounds: int, peer_python: str, shim: Path, work: Path) -> dict:
    ours, peer = [], []
    for r in range(rounds):
        for who in ("ours", "peer"):
            d = work / f"{name}-{who}-{r}"
            d.mkdir(parents=True, exist_ok=True)
            res = run_ours(model, data, s, d) if who == "ours" else run_peer(peer_python, shim, model, data, s, d)
            (ours if who == "ours" else peer).append(res)
            (work / "results.json").write_text(json.dumps({name: {"ours": ours, "peer": peer}}, indent=1, default=str))
            print(f"  [{name}] round {r + 1} {who:4s}: {statistics.mean(res['pps']):7.3g} pairs/s "
                  f"(windows {', '.join(f'{x:.3g}' for x in res['pps'])}), peak {res['peak']:.3f} GB, wall {res['wall']:.1f}s",
                  flush=True)
    return {"ours": ours, "peer": peer}


def report(name: str, model_desc: str, s: dict, res: dict) -> None:
    o_pps = statistics.mean(x for r in res["ours"] for x in r["pps"])
    p_pps = statistics.mean(x for r in res["peer"] for x in r["pps"])
    o_round = [statistics.mean(r["pps"]) for r in res["ours"]]
    p_round = [statistics.mean(r["pps"]) for r in res["peer"]]
    o_mem = max(r["peak"] for r in res["ours"])
    p_mem = max(r["peak"] for r in res["peer"])
    print(f"\n=== {name}: {model_desc}")
    print(f"    batch {s['batch_size']}, iters {s['iters']}, lr {s['lr']}, max_seq_length {s['max_seq_length']}, "
          f"LoRA rank {LORA['rank']} scale {LORA['scale']} all layers; report every {s['report']} steps; "
          f"timed windows end at steps {measured_steps(s)}")
    print(f"    {'':22s}{'ours':>12s}{'peer':>12s}{'ours/peer':>12s}")
    print(f"    {'pairs/s (mean)':22s}{o_pps:12.3g}{p_pps:12.3g}{o_pps / p_pps:11.2f}x")
    print(f"    {'pairs/s per round':22s}{' / '.join(f'{x:.3g}' for x in o_round):>12s}{' / '.join(f'{x:.3g}' for x in p_round):>12s}")
    print(f"    {'peak memory (GB)':22s}{o_mem:12.3f}{p_mem:12.3f}{o_mem / p_mem:11.2f}x")
    print("    loss / reward accuracy (train window means, round 1):")
    print(f"    {'step':>6s}{'ours loss':>12s}{'peer loss':>12s}{'ours acc':>10s}{'peer acc':>10s}")
    o, p = res["ours"][0], res["peer"][0]
    for step in sorted(set(o["loss"]) & set(p["loss"])):
        print(f"    {step:6d}{o['loss'][step]:12.4f}{p['loss'][step]:12.4f}{o['acc'][step]:10.3f}{p['acc'][step]:10.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds per model (default 2)")
    ap.add_argument("--peer-python", default=sys.executable, help="interpreter that has mlx-lm-lora (default: this one)")
    ap.add_argument("--only", choices=tuple(SETTINGS), help="run one model only")
    ap.add_argument("--work", help="working folder (default: a temp dir)")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="orpo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    shim = work / "peer_shim.py"
    shim.write_text(SHIM)
    versions = "import importlib.metadata as m; print(m.version('mlx-lm-lora'), m.version('mlx'), m.version('mlx-lm'))"
    ver = subprocess.run([args.peer_python, "-c", versions],
                         capture_output=True, text=True)
    if ver.returncode != 0:
        print("mlx-lm-lora is not installed for", args.peer_python, "- pip install -e '.[bench]'", file=sys.stderr)
        return 2
    print(f"peer: mlx-lm-lora {ver.stdout.split()[0]} via {args.peer_python} (mlx {ver.stdout.split()[1]}, mlx-lm {ver.stdout.split()[2]})")
    print(f"peer shim: {shim} adds device_info()['max_recommended_working_set_size'] = 0 "
          "(missing on MLX CPU; the peer's ORPO trainer reads it), then calls mlx_lm_lora.train.main()")
    print(f"work dir: {work}; cores: {os.cpu_count()}")

    tiny = tiny_model()
    models = {"tiny": (tiny, "builtin:tiny (hidden 64, 4 layers, vocab 1024)")}
    if args.only != "tiny":
        models["large"] = (large_model(work / "models"), "qwen3 hidden 512, 8 layers, vocab 8192 (tiny's tokenizer), random weights")
    datasets = {}
    for name in models:
        s = SETTINGS[name]
        datasets[name] = work / f"data-{s['train_rows']}"
        lens = make_dataset(datasets[name], tiny / "tokenizer.json", n_train=s["train_rows"], n_valid=8)
        print(f"data for {name}: {datasets[name]}: {s['train_rows']} train / 8 valid rows; tokens (min, mean, max): "
              + ", ".join(f"{k} {v}" for k, v in lens.items()))

    results = {}
    t0 = time.perf_counter()
    for name, (path, desc) in models.items():
        if args.only and name != args.only:
            continue
        print(f"\n--- {name}: {desc}", flush=True)
        results[name] = bench_one(name, path, datasets[name], SETTINGS[name], args.rounds, args.peer_python, shim, work)
    for name, res in results.items():
        report(name, models[name][1], SETTINGS[name], res)
    print(f"\ntotal bench time {time.perf_counter() - t0:.0f}s")
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
