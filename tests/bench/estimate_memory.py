"""The memory estimate against what MLX measures (see tests/bench/README.md).

    python tests/bench/estimate_memory.py [--only NAME ...] [--work DIR]
    python tests/bench/estimate_memory.py --fit [--cache FILE]

Default: trains the bench model (a qwen3 of the built-in model's recipe, hidden 256, 4
layers, MLP 768, vocab 4096, float32, random weights: big enough, with pairs up to 256
tokens, that activations and attention dominate its peak, where the demo's is 17 MB) on
synthetic preference rows of varied lengths, with the real `orpo-train`, for LoRA, DoRA,
full, 4-bit base and QAT at batch sizes 4 and 8, one whole epoch each (so the longest batch,
which sets the peak, comes up), and prints `orpo-train estimate --json`'s `peak_memory_gb`
beside the run's measured `peak_memory_gb` (the last train event: MLX's peak over the whole
process), and the error (estimate - measured) / measured. The demo preset on the tiny model
follows, for reference.

--fit: the calibration the estimate's coefficients come from (trainer.pure.estimate.
COEFFICIENTS and FORWARD_COEFFICIENTS). In one process it builds models of other shapes than
the bench model (hidden, MLP width, layers, vocabulary, heads varied; two in bfloat16), runs
the real compiled train step on synthetic batches in the layouts the trainer uses, for every
fine-tuning type, and the layout check's forward pass for some of them, and fits one
coefficient per term of the model by least squares of the relative error (no coefficient
below 0). It prints each case's measured peak against the current coefficients and the
fitted ones; the printed coefficients are what goes into estimate.py.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from trainer.pure.config import apply_overrides, config_from_dict  # noqa: E402
from trainer.pure.estimate import COEFFICIENTS  # noqa: E402

BENCH_SIZES = {"hidden_size": 256, "num_hidden_layers": 4, "intermediate_size": 768, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 4096}
KINDS = {
    "lora": [],
    "dora": ["finetune.type=dora"],
    "full": ["finetune.type=full", "training.learning_rate=1e-5"],
    "lora 4-bit base": ["model.quantize.bits=4"],
    "lora + qat": ["qat.enable=true", "qat.start_step=0"],
}
BATCHES = (4, 8)
TRAIN_ROWS = 32


# ------------------------------------------------------------------ real runs


def write_preset(work: Path) -> Path:
    import trainer_vs_peer as tvp

    model = tvp.large_model(work / "models", BENCH_SIZES)
    data = work / "data"
    if not (data / "train.jsonl").is_file():
        tvp.make_dataset(data, tvp.tiny_model() / "tokenizer.json", n_train=TRAIN_ROWS, n_valid=8)
    preset = work / "bench.toml"
    preset.write_text(f'''[model]
path = "{model}"
[data]
path = "{data}"
max_seq_length = 256
apply_chat_template = true
[finetune]
type = "lora"
rank = 8
[training]
learning_rate = 1e-4
steps_per_eval = 0
sample_prompts = 0
save_every = 100000
''')
    return preset


def trainer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=ROOT)


def sets(overrides: list[str]) -> list[str]:
    return [x for o in overrides for x in ("--set", o)]


def estimated(preset: Path, overrides: list[str]) -> dict:
    proc = trainer("estimate", str(preset), "--json", *sets(overrides))
    if proc.returncode != 0:
        raise RuntimeError(f"estimate failed ({proc.returncode}): {proc.stdout[-2000:]} {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def measured_peak(preset: Path, overrides: list[str], runs: Path, steps: int) -> float:
    """Peak over one whole epoch: the longest batch, which sets the peak, comes up somewhere."""
    run_sets = overrides + [f"training.iters={steps}", f"training.steps_per_report={steps}"]
    proc = trainer(str(preset), "--runs-dir", str(runs), "--force", *sets(run_sets))
    if proc.returncode != 0:
        raise RuntimeError(f"training failed ({proc.returncode}): {proc.stderr[-2000:]}")
    run_dir = Path(proc.stdout.splitlines()[0])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return max(e["peak_memory_gb"] for e in events if e.get("event") == "train")


def row(name: str, batch: int, est: dict, got: float) -> None:
    e = est["peak_memory_gb"]
    print(f"| {name:<16} | {batch:>5} | {e * 1e3:>12.1f} | {got * 1e3:>12.1f} | {100 * (e - got) / got:>+6.0f}% "
          f"| {est['peak_memory_gb_worst'] * 1e3:>10.1f} |", flush=True)


def run_table(work: Path, only: list[str]) -> int:
    preset = write_preset(work)
    print(f"bench model: qwen3 {BENCH_SIZES}, float32, random weights; {TRAIN_ROWS} synthetic train rows "
          "(prompts 10-150 tokens, answers 20-120), max_seq_length 256, LoRA/DoRA rank 8 on every linear; "
          "one epoch per run, no validation")
    print("| config           | batch | estimate MB  | measured MB  | error   | worst MB   |")
    print("|------------------|-------|--------------|--------------|---------|------------|")
    worst_error = 0.0
    for name, overrides in KINDS.items():
        if only and name not in only:
            continue
        for batch in BATCHES:
            o = overrides + [f"training.batch_size={batch}"]
            est = estimated(preset, o)
            got = measured_peak(preset, o, work / "runs", -(-TRAIN_ROWS // batch))
            worst_error = max(worst_error, abs(est["peak_memory_gb"] - got) / got)
            row(name, batch, est, got)
    if not only or "demo" in only:
        demo = ROOT / "presets" / "demo.toml"
        for batch in (8, 16):
            o = [f"training.batch_size={batch}", "training.steps_per_eval=0", "training.save_every=100000"]
            est = estimated(demo, o)
            row("demo (tiny)", batch, est, measured_peak(demo, o, work / "runs", -(-432 // batch)))
    print(f"largest error over the bench model's configs: {100 * worst_error:.0f}% (target: 25%)")
    return 0 if worst_error <= 0.25 else 1


# ------------------------------------------------------------------ calibration


def calibration_cases() -> list[dict]:
    """Models of other shapes than the bench model's, every term varied on its own."""
    base = {"hidden_size": 192, "num_hidden_layers": 3, "intermediate_size": 640, "num_attention_heads": 3,
            "num_key_value_heads": 1, "head_dim": 64, "vocab_size": 3072}
    wide = {"hidden_size": 384, "num_hidden_layers": 2, "intermediate_size": 1024, "num_attention_heads": 6,
            "num_key_value_heads": 2, "head_dim": 64, "vocab_size": 2048}
    cases = []

    def add(sizes=None, over=(), batch=4, lens=(64, 64, 64), sharing=False, dtype="float32"):
        cases.append({"sizes": {**base, **(sizes or {})}, "over": list(over), "batch": batch, "lens": list(lens),
                      "sharing": sharing, "dtype": dtype})

    add()
    add(lens=(16, 112, 112))
    add(lens=(32, 160, 96))
    add({"intermediate_size": 320})
    add({"intermediate_size": 1280})
    add({"hidden_size": 128, "num_attention_heads": 2})
    add({"hidden_size": 448, "num_attention_heads": 7, "num_key_value_heads": 7})
    add({"num_hidden_layers": 1})
    add({"num_hidden_layers": 1, "hidden_size": 384})
    add({"num_hidden_layers": 1, "intermediate_size": 1280})
    add({"num_hidden_layers": 1}, lens=(192, 64, 64))
    add({"num_hidden_layers": 6})
    add({"vocab_size": 1024})
    add({"vocab_size": 12288})
    add({"num_attention_heads": 6, "head_dim": 32, "num_key_value_heads": 2})
    add(batch=1)
    add(batch=2, lens=(128, 96, 96))
    add(batch=12, lens=(32, 32, 32))
    add(lens=(224, 96, 96))
    add(batch=8, lens=(32, 32, 32))
    add(batch=2, lens=(128, 128, 128))
    add(batch=1, lens=(256, 128, 128))
    add({"num_hidden_layers": 1}, batch=1, lens=(256, 128, 128))
    add(batch=1, lens=(384, 64, 64), sharing=True)
    add(lens=(96, 48, 48), sharing=True)
    add(lens=(160, 64, 32), sharing=True)
    add(lens=(160, 64, 32))
    add({"num_hidden_layers": 1}, lens=(160, 64, 32), sharing=True)
    add(batch=8, lens=(64, 32, 32), sharing=True)
    add(batch=8, lens=(64, 32, 32))
    add(batch=2, lens=(224, 96, 96), sharing=True)
    add(lens=(32, 96, 96), sharing=True)
    add(wide, batch=2, lens=(128, 64, 64), sharing=True)
    add({"vocab_size": 12288}, lens=(96, 48, 48), sharing=True)
    for over in (["finetune.type=dora"], ["finetune.type=full"], ["model.quantize.bits=4"], ["qat.enable=true"],
                 ["qat.enable=true", "model.quantize.bits=4"], ["finetune.type=dora", "model.quantize.bits=4"],
                 ["finetune.num_layers=1"], ["finetune.rank=64"], ["finetune.type=full", "finetune.num_layers=1"],
                 ["finetune.type=full", "qat.enable=true"], ["training.grad_accumulation_steps=2"],
                 ["finetune.keys=['self_attn.q_proj', 'self_attn.v_proj']"]):
        add(over=over)
        add(wide, over=over, batch=2, lens=(96, 96, 96))
    for over in ([], ["finetune.type=full"]):
        add(over=over, dtype="bfloat16")
    return cases


def _pairs(n: int, lens: list[int], seed: int = 0):
    from trainer.data import Pair

    rng = random.Random(seed)

    def tokens(k):
        return tuple(rng.randrange(3, 1000) for _ in range(k))

    return [Pair(tokens(lens[0]), tokens(lens[1]), tokens(lens[2]), 1.0) for _ in range(n)]


def build_model(case: dict):
    """The case's model, adapted (and fake-quantized) as the trainer would, with its config."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_lm.models import qwen3

    from trainer import qat
    from trainer.model import apply_finetune

    cfg = case_config(case)
    mx.random.seed(0)
    model = qwen3.Model(qwen3.ModelArgs.from_dict(case_arch(case)))
    if case["dtype"] != "float32":
        model.set_dtype(getattr(mx, case["dtype"]))
    if cfg.model.quantize.bits:
        nn.quantize(model, group_size=cfg.model.quantize.group_size, bits=cfg.model.quantize.bits)
    mx.eval(model.parameters())
    apply_finetune(model, cfg)
    if cfg.qat.enable:
        qat.apply_qat(model, cfg.qat.bits, cfg.qat.group_size)
        qat.set_gate(model, True)
    return model, cfg


def _shape_json(shape) -> dict:
    return {"passes": [[p.rows, p.length, p.context, p.headed] for p in shape.passes], "projected": shape.projected}


def _fresh_peak() -> None:
    import mlx.core as mx

    mx.synchronize()
    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()


def measure_case(case: dict) -> tuple[float, dict]:
    """(measured peak bytes of the real compiled train step, the step's shape as JSON)."""
    import mlx.core as mx
    import mlx.optimizers as optim

    from trainer.layouts import BatchLayout
    from trainer.memory import step_shape
    from trainer.step import make_train_step

    model, cfg = build_model(case)
    optimizer = optim.AdamW(learning_rate=1e-5)
    optimizer.init(model.trainable_parameters())
    mx.eval(model.parameters(), optimizer.state)
    layout = BatchLayout(0, True, case["sharing"])
    pairs = _pairs(case["batch"], case["lens"])
    shape = step_shape(layout.host_batch(pairs), True)
    arrays, extra, _ = layout.device_batch(pairs)
    step = make_train_step(model, optimizer, cfg, False)
    accum = cfg.training.grad_accumulation_steps
    model.train()
    _fresh_peak()
    for _ in range(2):
        grad = None
        for micro in range(accum):
            metrics, grad = step(*arrays, grad, micro == accum - 1, *extra)
            mx.eval(metrics, grad, model.state, optimizer.state)
    peak = mx.get_peak_memory()
    del model, optimizer, step, arrays, extra, metrics, grad
    _fresh_peak()
    return float(peak), _shape_json(shape)


def measure_forward(case: dict) -> tuple[float, dict]:
    """(measured peak bytes of the layout check's forward pass: the plain layout, every
    position projected, no gradients, the shape as JSON)."""
    import mlx.core as mx

    from trainer import data as D
    from trainer.layouts import to_device
    from trainer.memory import step_shape
    from trainer.step import make_loss_fn

    model, cfg = build_model(case)
    batch = D.collate(_pairs(case["batch"], case["lens"]), 0)
    arrays = to_device(batch)
    model.eval()
    _fresh_peak()
    mx.eval(make_loss_fn(cfg.orpo.beta, False)(model, *arrays))
    peak = mx.get_peak_memory()
    del model, arrays
    _fresh_peak()
    return float(peak), _shape_json(step_shape(batch, False))


def case_arch(case: dict) -> dict:
    from trainer.pure.builtin_names import TINY_MODEL_CONFIG

    return {**TINY_MODEL_CONFIG, **case["sizes"], "torch_dtype": case["dtype"]}


def case_config(case: dict):
    return apply_overrides(config_from_dict({}, "calibration"), case["over"] + [f"training.batch_size={case['batch']}"])


def case_counts(case: dict, step: dict, forward: bool = False) -> dict:
    from trainer.pure.estimate import Pass, StepShape, forward_counts, memory_counts, shape_from_config

    shape = StepShape(tuple(Pass(*p) for p in step["passes"]), step["projected"])
    counts = forward_counts if forward else memory_counts
    return counts(case_config(case), shape_from_config(case_arch(case)), shape)


def fit(rows: list[tuple[float, dict]], names: list[str]) -> dict[str, float]:
    """Least squares of the relative error, coefficients held at >= 0 (a term that would
    go negative is dropped and the rest refitted)."""
    import numpy as np

    free = list(names)
    while True:
        a = np.array([[c[k] / m for k in free] for m, c in rows])
        b = np.array([1.0 - c["fixed"] / m for m, c in rows])
        x, *_ = np.linalg.lstsq(a, b, rcond=None)
        if (x >= 0).all():
            out = dict.fromkeys(names, 0.0)
            out.update(zip(free, (float(v) for v in x)))
            return out
        free.pop(int(np.argmin(x)))


def forward_cases() -> list[dict]:
    cases = calibration_cases()
    plain = [c for c in cases if not c["over"] and not c["sharing"] and c["dtype"] == "float32"]
    return plain + [c for c in cases if c["over"] in (["finetune.type=full"], ["model.quantize.bits=4"])]


def _label(case: dict) -> str:
    sz = case["sizes"]
    return (f"{sz['hidden_size']}h {sz['num_hidden_layers']}L {sz['intermediate_size']}i {sz['vocab_size']}v "
            f"{sz['num_attention_heads']}x{sz['head_dim']}/{sz['num_key_value_heads']}kv b{case['batch']} {case['lens']} "
            f"{' '.join(case['over'])}{' shared' if case['sharing'] else ''}{' bf16' if case['dtype'] != 'float32' else ''}")


def _fit_one(title: str, cases: list[dict], measure, forward: bool, current: dict, cache: Path | None) -> dict:
    measured = json.loads(cache.read_text()) if cache and cache.is_file() else {}
    for i, case in enumerate(cases):
        key = json.dumps({**case, "forward": forward}, sort_keys=True)
        if key not in measured:
            measured[key] = measure(case)
            print(f"  {title}: measured {i + 1}/{len(cases)}: {measured[key][0] / 1e6:.1f} MB", file=sys.stderr, flush=True)
            if cache:
                cache.write_text(json.dumps(measured))
    rows = []
    for case in cases:
        peak, step = measured[json.dumps({**case, "forward": forward}, sort_keys=True)]
        rows.append((peak, case_counts(case, step, forward)))
    fitted = fit(rows, list(current))

    def predict(counts, coef):
        return sum(n * coef.get(k, 1.0) for k, n in counts.items())

    print(f"\n{title}")
    print(f"{'case':<78} {'measured MB':>11} {'current':>8} {'fitted':>8}")
    for case, (got, counts) in zip(cases, rows):
        cur, new = predict(counts, current), predict(counts, fitted)
        print(f"{_label(case)[:78]:<78} {got / 1e6:>11.1f} {100 * (cur - got) / got:>+7.0f}% {100 * (new - got) / got:>+7.0f}%")
    for name, coef in (("current", current), ("fitted", fitted)):
        errors = [abs(predict(c, coef) - m) / m for m, c in rows]
        print(f"{name}: largest error {100 * max(errors):.0f}%, mean {100 * sum(errors) / len(errors):.1f}%")
    print("fitted {" + ", ".join(f'"{k}": {v:.2f}' for k, v in fitted.items()) + "}")
    return fitted


def run_fit(cache: Path | None) -> int:
    from trainer.pure.estimate import FORWARD_COEFFICIENTS

    _fit_one("training step (COEFFICIENTS)", calibration_cases(), measure_case, False, COEFFICIENTS, cache)
    _fit_one("forward pass without gradients (FORWARD_COEFFICIENTS)", forward_cases(), measure_forward, True,
             FORWARD_COEFFICIENTS, cache)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fit", action="store_true", help="calibrate the coefficients instead")
    p.add_argument("--only", nargs="*", default=[], help=f"configs to run: {', '.join(KINDS)}, demo")
    p.add_argument("--cache", type=Path, help="--fit: keep the measured peaks in this JSON file and reuse them")
    p.add_argument("--work", type=Path, help="keep the model, data and runs here (default: a temporary folder)")
    args = p.parse_args()
    if args.fit:
        return run_fit(args.cache)
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return run_table(args.work, args.only)
    with tempfile.TemporaryDirectory() as tmp:
        return run_table(Path(tmp), args.only)


if __name__ == "__main__":
    sys.exit(main())
