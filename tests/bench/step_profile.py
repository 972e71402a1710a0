"""Where our ORPO step spends its time, layout by layout, in one process.

    .venv/bin/python bench/step_profile.py [--model tiny|large] [--batch-size 8] [--batches 6]

Same model and data as bench/trainer_vs_peer.py (built offline). For each layout the trainer
can use, it runs the compiled training step on `--batches` batches drawn with a fixed seed
from that layout's own grouping, each twice (the first call of a new shape traces and
compiles it; the second is the cached step); all layouts draw the same batches, and prints positions run through the model per
pair, seconds per pair and peak memory:
- plain: chosen and rejected stacked [2B, T], every position projected onto the vocabulary;
- gathered: the same batch, only scored positions projected;
- shared: the prompt once per pair, chosen and rejected continuations as their own passes
  (trainer/shared_prefix.py), only scored positions projected.
Then, for one shared batch, forward alone against forward + backward, and the CPU BLAS's
speed for the two weight layouts a linear layer uses (forward x @ W.T, backward dY @ W).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "bench"))


def best_of(fn, n: int = 3) -> float:
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "large"), default="tiny")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--work", default=None, help="folder for the generated model and data (default: a temp dir)")
    args = ap.parse_args()

    import tempfile

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    import trainer_vs_peer as tvp

    from trainer import data as D
    from trainer.layouts import gather_to_device, positions, shared_to_device, to_device
    from trainer.loop import prepare
    from trainer.pure.config import config_from_dict
    from trainer.run_control import RunLog
    from trainer.shared_prefix import collate_shared
    from trainer.step import make_loss_fn, make_train_step

    work = Path(args.work or tempfile.mkdtemp(prefix="orpo-profile-"))
    data = work / "data"
    if not (data / "train.jsonl").is_file():
        tvp.make_dataset(data, tvp.tiny_model() / "tokenizer.json")
    model_path = tvp.tiny_model() if args.model == "tiny" else tvp.large_model(work / "models")
    cfg = config_from_dict({
        "model": {"path": str(model_path)},
        "data": {"path": str(data), "max_seq_length": 512},
        "finetune": {"dropout": 0.0, "rank": tvp.LORA["rank"], "scale": tvp.LORA["scale"], "num_layers": -1},
        "training": {"batch_size": args.batch_size, "max_grad_norm": 0.0, "weight_decay": 0.0},
    }, "profile")
    prep = prepare(cfg, RunLog(work / "profile.log", echo=False))
    model = prep.model
    print(f"model {args.model} ({model_path.name}), batch {args.batch_size}, {args.batches} batches per layout, "
          f"{len(prep.train_pairs)} train pairs; mlx {mx.__version__}, device {mx.default_device()}")

    def plain_args(pairs):
        b = D.collate(pairs, 0)
        return b, (*to_device(b), None, True)

    def gathered_args(pairs):
        b = D.collate(pairs, 0)
        return b, (*to_device(b), None, True, gather_to_device(b))

    def shared_args(pairs):
        s = collate_shared(pairs, 0)
        return s, (*to_device(s), None, True, gather_to_device(s), shared_to_device(s))

    layouts = {
        "plain": (D.make_batches, plain_args),
        "gathered": (D.make_batches, gathered_args),
        "shared": (D.make_batches, shared_args),
    }
    print(f"\n{'layout':10s}{'positions/pair':>16s}{'s/pair (new shape)':>20s}{'s/pair (cached)':>17s}{'peak GB':>9s}")
    rows = {}
    for name, (grouping, build) in layouts.items():
        optimizer = optim.AdamW(learning_rate=0.0, weight_decay=0.0)  # weights stay put: layouts see the same model
        optimizer.init(model.trainable_parameters())
        step = make_train_step(model, optimizer, cfg, False)
        batches = grouping(prep.train_pairs, args.batch_size)
        chosen = random.Random(0).sample(range(len(batches)), min(args.batches, len(batches)))
        first, again, pos, pairs_n = [], [], 0, 0
        mx.reset_peak_memory()
        for bi in chosen:
            pairs = [prep.train_pairs[i] for i in batches[bi]]
            batch, step_args = build(pairs)
            pos += positions(batch)
            pairs_n += len(pairs)
            for out in (first, again):
                t = time.perf_counter()
                metrics, _ = step(*step_args)
                mx.eval(metrics, model.state, optimizer.state)
                out.append(time.perf_counter() - t)
        rows[name] = (pos / pairs_n, sum(first) / pairs_n, sum(again) / pairs_n, mx.get_peak_memory() / 1e9)
        print(f"{name:10s}{rows[name][0]:16.1f}{rows[name][1]:20.3f}{rows[name][2]:17.3f}{rows[name][3]:9.3f}", flush=True)
    base = rows["plain"]
    for name, r in rows.items():
        print(f"  {name:10s} positions x{base[0] / r[0]:.2f} fewer, cached step x{base[2] / r[2]:.2f} faster than plain")

    # Forward against forward + backward on one shared batch.
    groups = D.make_batches(prep.train_pairs, args.batch_size)
    pairs = [prep.train_pairs[i] for i in groups[len(groups) // 2]]
    s = collate_shared(pairs, 0)
    loss_args = (*to_device(s), gather_to_device(s), shared_to_device(s))
    loss_fn = make_loss_fn(0.1, False)
    grad_fn = nn.value_and_grad(model, loss_fn)
    fwd = best_of(lambda: mx.eval(loss_fn(model, *loss_args)[0]))
    both = best_of(lambda: mx.eval(grad_fn(model, *loss_args)))
    print(f"\none shared batch ({positions(s)} positions): forward {fwd:.3f}s, forward+backward {both:.3f}s "
          f"(backward {both - fwd:.3f}s, {100 * (both - fwd) / both:.0f}%)")

    # The BLAS behind MLX's CPU backend is not equally fast for both operand layouts.
    h = getattr(getattr(model, "args", None), "hidden_size", 512)
    m_rows, k, n = 176, h, 3 * h
    x, w = mx.random.normal((m_rows, k)), mx.random.normal((n, k))
    wt = mx.contiguous(w.T)
    mx.eval(x, w, wt)
    for label, f in (("x @ W.T (forward of a linear layer)", lambda: x @ w.T), ("x @ W   (its input gradient)", lambda: x @ wt)):
        dt = best_of(lambda f=f: mx.eval(f()), 5)
        print(f"  matmul [{m_rows}x{k}] by [{k}x{n}], {label}: {2 * m_rows * k * n / dt / 1e9:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
