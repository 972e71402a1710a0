"""How many distinct input shapes the compiled step sees on the demo, and what a new shape
costs against a cached one.

    .venv/bin/python tests/bench/step_shapes.py [--epochs 2] [--no-time] [--steps-per-doubling N] [--shared-floor N]

First, with no model step run: over one epoch of the demo preset (presets/demo.toml, batch 8),
the distinct step signatures (the key `ShapeBoundedStep` compiles by) for one rank and for each
of two ranks' shares, per layout (the one the trainer chooses for the demo, gathered head,
plain), with the positions run through the model and the scored rows projected onto the
vocabulary. Then, unless --no-time, the real compiled step (`ShapeBoundedStep`) over
`--epochs` epochs on one rank in the chosen layout: per step, time.perf_counter (wall) and
time.process_time (CPU of the whole process, MLX's stream thread included: less blurred by
other load than wall time) around the step and its mx.eval, split into steps whose shape was new to the compiled function (traced
and compiled) and cached ones, the mean ms/step of each epoch, and how many of its compiled
functions (generations of shapes) were dropped. --steps-per-doubling and --shared-floor override data.STEPS_PER_DOUBLING and
shared_prefix.SHARED_PAD_MULTIPLE, to compare ladders.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def scored_rows(b: dict) -> int:
    n = len(b["gather"][0])
    if "shared" in b:
        sh = b["shared"]
        n += len(sh[5]) + (len(sh[-1]) if len(sh) > 8 else 0)
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--no-time", action="store_true")
    ap.add_argument("--steps-per-doubling", type=int, default=None)
    ap.add_argument("--shared-floor", type=int, default=None)
    args = ap.parse_args()

    import mlx.core as mx
    import mlx.optimizers as optim
    from demo_setup import prepared_demo  # beside this script

    from trainer import data as D
    from trainer import shared_prefix as SP
    from trainer.layouts import BatchLayout, positions
    from trainer.step import ShapeBoundedStep, build_schedule, make_train_step
    from trainer.team import Team

    if args.steps_per_doubling:
        D.STEPS_PER_DOUBLING = args.steps_per_doubling
    if args.shared_floor:
        SP.SHARED_PAD_MULTIPLE = args.shared_floor
    demo = prepared_demo()
    cfg, prep, batches, chosen = demo.cfg, demo.prep, demo.batches, demo.layout
    pad = D.pad_id(prep.tokenizer)
    print(f"demo: {len(batches)} batches per epoch, batch {cfg.training.batch_size}; ladder "
          f"{D.STEPS_PER_DOUBLING} sizes per doubling, floors: plain {D.PAD_MULTIPLE}/{D.GATHER_MULTIPLE}, "
          f"shared {SP.SHARED_PAD_MULTIPLE}; cap {ShapeBoundedStep.MAX_COMPILED_SHAPES} shapes; mlx {mx.__version__}")
    layouts = {"chosen": chosen, "gathered": BatchLayout(pad, chosen.gathered, False), "plain": BatchLayout(pad, False, False)}
    print(f"\n{'layout':9s}{'ranks':>6s}{'rank':>5s}{'shapes':>8s}{'positions':>11s}{'scored rows':>13s}")
    for name, layout in layouts.items():
        for size in (1, 2):
            for rank in range(size):
                team = Team(rank=rank, size=size)
                keys, pos, rows = set(), 0, 0
                for idx in batches:
                    arrays, extra, b, _ = layout.team_batch(prep.train_pairs, idx, team)
                    weight = ((None,) * (2 - len(extra)) + (mx.array(1.0),)) if size > 1 else ()
                    keys.add(ShapeBoundedStep.signature(*arrays, None, True, *extra, *weight))
                    pos += positions(b)
                    rows += scored_rows(b)
                print(f"{name:9s}{size:6d}{rank:5d}{len(keys):8d}{pos:11d}{rows:13d}")
    if args.no_time:
        return 0

    optimizer = optim.AdamW(learning_rate=build_schedule(cfg), weight_decay=cfg.training.weight_decay)
    optimizer.init(prep.model.trainable_parameters())
    step = ShapeBoundedStep(lambda: make_train_step(prep.model, optimizer, cfg, prep.use_scores))
    prep.model.train()
    print(f"\none rank, layout 'chosen', {args.epochs} epochs of the compiled step:")
    for epoch in range(args.epochs):
        new, cached = [], []
        for pos in range(len(batches)):
            idx = D.batch_at(batches, cfg.training.seed, epoch * len(batches) + pos)
            arrays, extra, _ = chosen.device_batch([prep.train_pairs[i] for i in idx])
            call = (*arrays, None, True, *extra)
            fresh = not step.holds(*call)
            t, cpu = time.perf_counter(), time.process_time()
            metrics, _ = step(*call)
            mx.eval(metrics, prep.model.state, optimizer.state)
            (new if fresh else cached).append((1000 * (time.perf_counter() - t), 1000 * (time.process_time() - cpu)))
        every = new + cached

        def med(xs: list, i: int) -> str:
            return f"{statistics.median(x[i] for x in xs):4.0f}" if xs else "   -"

        print(f"  epoch {epoch + 1}: {statistics.mean(x[0] for x in every):4.0f} ms/step wall, "
              f"{statistics.mean(x[1] for x in every):4.0f} CPU; {len(new):2d} new shapes (median {med(new, 0)} wall, "
              f"{med(new, 1)} CPU), {len(cached):2d} cached (median {med(cached, 0)} wall, {med(cached, 1)} CPU); "
              f"generations dropped so far {step.rebuilds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
