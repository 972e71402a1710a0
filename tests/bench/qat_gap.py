"""Does quantization-aware training narrow the quantization gap? On the tiny built-in model.

For each seed it trains the demo preset (same iters, same seed) once without QAT and once with
QAT per bit width (QAT bits = deployment bits, group size 64, `qat.start_step` on), each with
the real `orpo-train`. Then, for every (bits, QAT) pair, it measures the ORPO validation loss
(and its NLL part) over the whole demo valid split of

* float: the trained adapters on the float base (`mlx_lm.load(base, adapter_path=...)`),
* quantized: `orpo-train fuse RUN --quantize BITS` (fused, then quantized), loaded alone,

and prints bits, QAT, both losses and the gap (quantized - float). The run without QAT is
shared by every bit width (without QAT the bits change nothing in training).

    python bench/qat_gap.py [--iters 150] [--start-step 50] [--bits 3 4] [--seeds 0]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
DEMO = ROOT / "presets" / "demo.toml"
GROUP_SIZE = 64


def train(runs_dir: Path, settings: list[str]) -> Path:
    args = [sys.executable, "-m", "trainer", str(DEMO), "--runs-dir", str(runs_dir)]
    for s in settings:
        args += ["--set", s]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(f"training failed ({settings}): {proc.stderr[-2000:]}")
    return Path(proc.stdout.splitlines()[0])


def valid_batches(cfg, tokenizer):
    from trainer import data as D
    from trainer.layouts import to_device

    splits = D.load_splits(cfg.data, cfg.training.seed)
    pairs, _ = D.tokenize_rows(splits.valid, tokenizer, cfg.data.max_seq_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    use_scores = any(p.score != 1.0 for p in pairs)
    batches = [(len(idx), to_device(D.collate([pairs[i] for i in idx], pad))) for idx in D.make_batches(pairs, cfg.training.batch_size)]
    return batches, use_scores


def measure(run_dir: Path, bits: int, cache: dict) -> tuple[dict, dict]:
    """(float metrics, fused-then-quantized metrics) over the valid split."""
    from mlx_lm.utils import load

    from trainer.fuse import base_folder, fuse_run
    from trainer.pure.config import load_preset
    from trainer.step import evaluate

    cfg = load_preset(run_dir / "config.toml")
    base = base_folder(run_dir)
    adapted, tokenizer = load(str(base), adapter_path=str(run_dir / "adapters"))
    if "batches" not in cache:
        cache["batches"] = valid_batches(cfg, tokenizer)
    batches, use_scores = cache["batches"]
    if run_dir not in cache:
        cache[run_dir] = evaluate(adapted, batches, cfg, use_scores)
    out = fuse_run(run_dir, quantize=bits, group_size=GROUP_SIZE, out=run_dir / f"fused-q{bits}")
    quantized, _ = load(str(out))
    return cache[run_dir], evaluate(quantized, batches, cfg, use_scores)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--start-step", type=int, default=50)
    ap.add_argument("--bits", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="qat-gap-"))
    os.environ.setdefault("ORPO_TUI_CACHE", str(tmp / "cache"))
    os.environ.setdefault("HF_HOME", str(tmp / "hf"))
    common = [f"training.iters={args.iters}", "training.steps_per_eval=0", f"training.save_every={args.iters}"]
    rows = []
    cache: dict = {}
    for seed in args.seeds:
        runs = tmp / f"seed{seed}"
        plain = train(runs / "plain", [*common, f"training.seed={seed}"])
        for bits in args.bits:
            with_qat = train(runs / f"qat{bits}", [*common, f"training.seed={seed}", "qat.enable=true", f"qat.bits={bits}",
                                                 f"qat.group_size={GROUP_SIZE}", f"qat.start_step={args.start_step}"])
            for name, run_dir in (("off", plain), ("on", with_qat)):
                f, q = measure(run_dir, bits, cache)
                rows.append((seed, bits, name, f, q))
                print(f"seed {seed} bits {bits} qat {name}: float {f['loss']:.4f}, quantized {q['loss']:.4f}", flush=True)

    print(f"\ntiny built-in model, demo preset, {args.iters} iters, QAT from step {args.start_step}, group size {GROUP_SIZE}; "
          "ORPO validation loss over the demo valid split (nll = its NLL part)")
    print(f"{'seed':>4} {'bits':>4} {'QAT':>4} {'val float':>10} {'val quant':>10} {'gap':>8} "
          f"{'nll float':>10} {'nll quant':>10} {'nll gap':>8}")
    for seed, bits, name, f, q in rows:
        print(f"{seed:>4} {bits:>4} {name:>4} {f['loss']:>10.4f} {q['loss']:>10.4f} {q['loss'] - f['loss']:>8.4f} "
              f"{f['nll_loss']:>10.4f} {q['nll_loss']:>10.4f} {q['nll_loss'] - f['nll_loss']:>8.4f}")
    print(f"\nrun folders under {tmp}")


if __name__ == "__main__":
    main()
