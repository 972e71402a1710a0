"""The model card (`README.md`) `orpo-train push` uploads beside a run's adapters or fused model.

Hugging Face's card layout: YAML front matter (`base_model` and `datasets` only when they are
hub ids, `library_name: mlx`, tags) and a body with the base model, the ORPO settings, the
data, the final and best validation metrics under TRL's names (as in metrics.jsonl), and the
code that loads the upload with mlx-lm.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.pure.builtin_names import is_builtin
from trainer.pure.config_schema import Config
from trainer.pure.events import read_events
from trainer.pure.metrics import ORPO_METRICS
from trainer.pure.run_folder import RunFolder
from trainer.pure.serve import trained_on_chat_template
from trainer.pure.sources import SourceError, SourceKind, count_rows, held_out_count, resolve_source, split_files

__all__ = ["CARD", "ValPoint", "val_points", "render_card", "hub_id"]

CARD = "README.md"
_KIND = {"lora": "LoRA adapters", "dora": "DoRA adapters", "full": "fully fine-tuned weights (loaded as adapters)"}
EXAMPLE_PROMPT = "Hello"


@dataclass(frozen=True)
class ValPoint:
    step: int
    values: dict[str, float]


def hub_id(spec: str) -> str | None:
    """`spec` when it names a hub repo (`owner/name`), None for a builtin or local path."""
    if is_builtin(spec) or Path(spec).expanduser().exists():
        return None
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return None
    return spec


def val_points(run_dir: Any) -> tuple[ValPoint | None, ValPoint | None]:
    """(final, best) validation metrics from metrics.jsonl. Best is the evaluation whose
    adapters were saved to adapters/best (the last `checkpoint` event with `best: true`),
    else the lowest finite loss."""
    events = read_events(RunFolder(run_dir).metrics)
    vals = [e for e in events if e.get("event") == "val"]
    if not vals:
        return None, None
    best_steps = [e["step"] for e in events if e.get("event") == "checkpoint" and e.get("best")]
    by_step = {e["step"]: e for e in vals}
    if best_steps and best_steps[-1] in by_step:
        best = by_step[best_steps[-1]]
    else:
        finite = [e for e in vals if isinstance(e.get("loss"), float) and math.isfinite(e["loss"])]
        best = min(finite, key=lambda e: e["loss"], default=None)
    return _point(vals[-1]), (_point(best) if best else None)


def _point(event: dict[str, Any]) -> ValPoint:
    return ValPoint(event["step"], {m: event[m] for m in ORPO_METRICS if m in event})


def _data_sizes(cfg: Config) -> str:
    try:
        source = resolve_source(cfg.data.path)
        if source.kind is SourceKind.HUB:
            return "sizes as the hub dataset has them"
        files = split_files(source, cfg.data)
        rows = count_rows(files.train)
        if files.valid is not None:
            return f"{rows} train pairs, {count_rows(files.valid)} validation pairs"
        held = held_out_count(rows, cfg.data.valid_fraction)
        return f"{rows - held} train pairs, {held} validation pairs held out of the train file"
    except (SourceError, ValueError, OSError) as exc:
        return f"sizes unknown ({exc})"


def _number(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _front_matter(cfg: Config, fused: bool) -> str:
    lines = ["---"]
    base = hub_id(cfg.model.path)
    if base:
        lines.append(f"base_model: {base}")
    lines += ["library_name: mlx", "pipeline_tag: text-generation", "tags:", "- mlx", "- orpo", f"- {cfg.finetune.type}"]
    if fused:
        lines.append("- fused")
    data = hub_id(cfg.data.path)
    if data:
        lines += ["datasets:", f"- {data}"]
    return "\n".join([*lines, "---"])


def _settings(cfg: Config, steps_done: int | None) -> list[str]:
    t, f = cfg.training, cfg.finetune
    rows = [
        ("orpo.beta", cfg.orpo.beta),
        ("orpo.reward_scaling", cfg.orpo.reward_scaling),
        ("training.learning_rate", t.learning_rate),
        ("training.lr_schedule", t.lr_schedule),
        ("training.warmup_steps", t.warmup_steps),
        ("training.iters", t.iters),
        ("steps trained", steps_done if steps_done is not None else "unknown"),
        ("training.batch_size", t.batch_size),
        ("training.grad_accumulation_steps", t.grad_accumulation_steps),
        ("training.weight_decay", t.weight_decay),
        ("training.max_grad_norm", t.max_grad_norm),
        ("training.seed", t.seed),
        ("data.max_seq_length", cfg.data.max_seq_length),
        ("finetune.type", f.type),
    ]
    if f.type in ("lora", "dora"):
        rows += [("finetune.rank", f.rank), ("finetune.scale", f.scale), ("finetune.dropout", f.dropout)]
    rows += [("finetune.num_layers", f.num_layers)]
    if f.keys:
        rows.append(("finetune.keys", ", ".join(f.keys)))
    if cfg.model.quantize.bits:
        rows.append(("model.quantize (QLoRA base)", f"{cfg.model.quantize.bits} bits, group size {cfg.model.quantize.group_size}"))
    if cfg.qat.enable:
        rows.append(("qat", f"{cfg.qat.bits} bits, group size {cfg.qat.group_size}, from step {cfg.qat.start_step}"))
    return ["| setting | value |", "|---|---|", *(f"| `{k}` | {_number(v)} |" for k, v in rows)]


def _metrics(final: ValPoint | None, best: ValPoint | None) -> list[str]:
    if final is None:
        return ["No validation was run."]
    points = [("final", final)] + ([("best", best)] if best else [])
    head = "| metric | " + " | ".join(f"{name} (step {p.step})" for name, p in points) + " |"
    lines = [head, "|---|" + "---|" * len(points)]
    for metric in ORPO_METRICS:
        if any(metric in p.values for _, p in points):
            cells = " | ".join(_number(p.values.get(metric, "")) for _, p in points)
            lines.append(f"| `{metric}` | {cells} |")
    return lines


def _usage(cfg: Config, repo: str, fused: bool, chat: bool) -> list[str]:
    base = hub_id(cfg.model.path) or cfg.model.resolved_path or cfg.model.path
    template = "" if chat else " --ignore-chat-template"
    if fused:
        return ["```python", "from mlx_lm import generate, load", "",
                f'model, tokenizer = load("{repo}")', *_prompt_lines(chat), "```", "", "```bash",
                f'mlx_lm.generate --model {repo} --prompt "{EXAMPLE_PROMPT}"{template}', "```"]
    local = repo.split("/")[-1]
    return ["```python", "from huggingface_hub import snapshot_download", "from mlx_lm import generate, load", "",
            f'adapters = snapshot_download("{repo}")',
            f'model, tokenizer = load("{base}", adapter_path=adapters)', *_prompt_lines(chat), "```", "", "```bash",
            f"hf download {repo} --local-dir {local}",
            f'mlx_lm.generate --model {base} --adapter-path {local} --prompt "{EXAMPLE_PROMPT}"{template}', "```"]


def _prompt_lines(chat: bool) -> list[str]:
    if chat:
        return [f'prompt = tokenizer.apply_chat_template([{{"role": "user", "content": "{EXAMPLE_PROMPT}"}}], '
                "add_generation_prompt=True)",
                "print(generate(model, tokenizer, prompt=prompt, max_tokens=100))"]
    return [f'print(generate(model, tokenizer, prompt="{EXAMPLE_PROMPT}", max_tokens=100))']


def render_card(cfg: Config, run_dir: Any, repo: str, best: bool, fused: bool) -> str:
    """The card's text for the upload of `run_dir` to `repo`."""
    run = RunFolder(run_dir)
    final, best_point = val_points(run_dir)
    try:
        summary = json.loads(run.summary.read_text())
    except (OSError, ValueError):
        summary = {}
    steps_done = summary.get("steps_done") if isinstance(summary, dict) else None
    chat = trained_on_chat_template(run_dir)
    what = "fused model" if fused else _KIND.get(cfg.finetune.type, f"{cfg.finetune.type} adapters")
    which = ("the best validation loss's" + (f" (step {best_point.step})" if best_point else "")) if best else "the latest"
    base_hub = hub_id(cfg.model.path)
    if base_hub:
        base_line = f"[{base_hub}](https://huggingface.co/{base_hub})"
    elif is_builtin(cfg.model.path):
        base_line = f"`{cfg.model.path}`, orpo-tui's built-in model (not on the hub), at `{cfg.model.resolved_path}` where it trained"
    else:
        base_line = f"the local model folder `{cfg.model.resolved_path or cfg.model.path}` (not on the hub)"
    if cfg.model.quantize.bits and not fused:
        base_line += (f"; trained on its {cfg.model.quantize.bits}-bit copy (group size {cfg.model.quantize.group_size}), "
                      "which `mlx_lm.convert -q` makes")
    base_line += "."
    data_hub = hub_id(cfg.data.path)
    data_line = f"[{data_hub}](https://huggingface.co/datasets/{data_hub})" if data_hub else f"`{cfg.data.path}`"
    prompts = ("through the tokenizer's chat template" if chat
               else "as plain text (no chat template: use `--ignore-chat-template`, or `/v1/completions` on a server)")
    body = [
        _front_matter(cfg, fused), "",
        f"# {repo.split('/')[-1]}", "",
        f"{what} ({which}) trained with ORPO (odds-ratio preference optimization) by orpo-tui on MLX.", "",
        "## Base model", "", base_line, "",
        "## ORPO settings", "", *_settings(cfg, steps_done), "",
        "## Data", "", f"{data_line}: {_data_sizes(cfg)}; prompts {prompts}.", "",
        "## Validation metrics", "",
        "TRL's ORPO metric names; `final` is the last evaluation, `best` the lowest validation loss.", "",
        *_metrics(final, best_point), "",
        "## Use with mlx-lm", "", *_usage(cfg, repo, fused, chat), "",
    ]
    return "\n".join(body)
