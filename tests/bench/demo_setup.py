"""The demo as the trainer prepares it, for the benchmarks that drive its compiled step."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Demo:
    cfg: Any
    prep: Any  # trainer.loop.Prepared
    batches: list  # the train batches of one epoch (indices into prep.train_pairs)
    layout: Any  # the BatchLayout the trainer chooses on the first batch


def prepared_demo() -> Demo:
    """The demo preset's config, model and data, its batches and its chosen layout."""
    from trainer import data as D
    from trainer.layouts import BatchLayout, choose_layouts
    from trainer.loop import prepare
    from trainer.pure.config_toml import load_preset

    cfg = load_preset(ROOT / "presets" / "demo.toml")
    prep = prepare(cfg, lambda _line: None)
    pad = D.pad_id(prep.tokenizer)
    batches = D.make_batches(prep.train_pairs, cfg.training.batch_size)
    first = [prep.train_pairs[i] for i in batches[0]]
    return Demo(cfg, prep, batches, BatchLayout(pad, *choose_layouts(prep.model, first, pad, cfg.orpo.beta, prep.use_scores)))
