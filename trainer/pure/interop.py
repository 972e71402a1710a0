"""mlx-lm-lora's ORPO YAML config <-> our presets.

Users arrive with `mlx_lm_lora.train -c config.yaml` files and leave with presets they may
want to run there too. Every key that has an equivalent is carried over; every one that has
none is reported by name, never silently dropped. Pure: yaml and our config only.
"""

from __future__ import annotations

from typing import Any

import yaml

from trainer.pure.config import Config, ConfigError, config_from_dict, get_value, iter_fields

# mlx-lm-lora top-level key -> our dotted key, for values that carry over unchanged.
DIRECT = {
    "model": "model.path",
    "data": "data.path",
    "train_type": "finetune.type",
    "seed": "training.seed",
    "num_layers": "finetune.num_layers",
    "batch_size": "training.batch_size",
    "iters": "training.iters",
    "gradient_accumulation_steps": "training.grad_accumulation_steps",
    "val_batches": "training.val_batches",
    "learning_rate": "training.learning_rate",
    "steps_per_report": "training.steps_per_report",
    "steps_per_eval": "training.steps_per_eval",
    "save_every": "training.save_every",
    "max_seq_length": "data.max_seq_length",
    "beta": "orpo.beta",
    "reward_scaling": "orpo.reward_scaling",
}
LORA = {"rank": "finetune.rank", "scale": "finetune.scale", "dropout": "finetune.dropout", "keys": "finetune.keys"}
LOAD_BITS = {"load_in_4bits": 4, "load_in_6bits": 6, "load_in_8bits": 8}
# Keys whose value only restates what our trainer always does.
IMPLIED = {"train": True, "train_mode": "orpo", "mask_prompt": True}
# Ours that the YAML expresses another way (quantization, schedule, optimizer) or not at all.
EXPRESSED_ELSEWHERE = {"model.quantize.bits", "training.lr_schedule", "training.warmup_steps",
                       "training.min_learning_rate", "training.weight_decay", *DIRECT.values(), *LORA.values()}


class InteropError(Exception):
    """A YAML file that is not an ORPO config we can read, in one line."""


def _set(raw: dict, path: str, value: Any) -> None:
    *tables, key = path.split(".")
    node = raw
    for table in tables:
        node = node.setdefault(table, {})
    node[key] = value


def import_yaml(text: str, source: str = "config.yaml") -> tuple[dict, list[str]]:
    """A preset table from an mlx-lm-lora YAML config, and the YAML keys it could not carry."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InteropError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise InteropError(f"{source}: expected a mapping of options")
    if data.get("train_mode", "orpo") != "orpo":
        raise InteropError(f"{source}: train_mode is {data['train_mode']!r}; only ORPO configs can be imported")
    raw: dict = {}
    unmapped: list[str] = []
    for key, value in data.items():
        if key in DIRECT:
            if value is not None:
                _set(raw, DIRECT[key], value)
        elif key == "lora_parameters" and isinstance(value, dict):
            for sub, sub_value in value.items():
                if sub in LORA:
                    _set(raw, LORA[sub], list(sub_value) if sub == "keys" else sub_value)
                else:
                    unmapped.append(f"lora_parameters.{sub}")
        elif key in LOAD_BITS:
            if value:
                _set(raw, "model.quantize.bits", LOAD_BITS[key])
        elif key == "lr_schedule":
            unmapped += _import_schedule(value, raw)
        elif key == "optimizer":
            if str(value).lower() == "adam":
                _set(raw, "training.weight_decay", 0.0)  # AdamW without decay is Adam
            elif str(value).lower() != "adamw":
                unmapped.append(f"optimizer ({value}: this trainer uses AdamW)")
        elif key == "optimizer_config":
            decay = ((value or {}).get("adamw") or {}).get("weight_decay")
            if decay is not None:
                _set(raw, "training.weight_decay", decay)
            extra = [f"optimizer_config.{k}" for k, v in (value or {}).items() if v and not (k == "adamw" and set(v) <= {"weight_decay"})]
            unmapped += extra
        elif key in IMPLIED:
            if value != IMPLIED[key]:
                unmapped.append(f"{key} ({value!r}: this trainer always uses {IMPLIED[key]!r})")
        elif value is not None and value is not False:
            unmapped.append(key)
    try:
        config_from_dict(raw, source)
    except ConfigError as exc:
        raise InteropError(str(exc)) from None
    return raw, unmapped


def _import_schedule(value: Any, raw: dict) -> list[str]:
    if not value:
        return []
    if not isinstance(value, dict):
        return ["lr_schedule"]
    name, args = value.get("name"), list(value.get("arguments") or [])
    if name == "cosine_decay":
        _set(raw, "training.lr_schedule", "cosine")
        if len(args) >= 3:
            _set(raw, "training.min_learning_rate", args[2])
    elif name not in (None, "constant"):
        return [f"lr_schedule.name ({name}: only constant and cosine_decay are supported)"]
    if value.get("warmup"):
        _set(raw, "training.warmup_steps", int(value["warmup"]))
    return [f"lr_schedule.{k}" for k in value if k not in ("name", "arguments", "warmup")]


def export_yaml(cfg: Config) -> tuple[str, list[str]]:
    """An mlx-lm-lora ORPO YAML for this config, and our keys it cannot express."""
    out: dict[str, Any] = {"train": True, "train_mode": "orpo", "mask_prompt": True}
    for yaml_key, path in DIRECT.items():
        out[yaml_key] = _plain(get_value(cfg, path))
    out["lora_parameters"] = {k: _plain(get_value(cfg, p)) for k, p in LORA.items() if k != "keys" or get_value(cfg, p)}
    bits = cfg.model.quantize.bits
    unmapped = []
    if bits in (4, 6, 8):
        out[f"load_in_{bits}bits"] = True
    elif bits:
        unmapped.append(f"model.quantize.bits = {bits} (mlx-lm-lora loads only 4, 6 or 8 bits)")
    t = cfg.training
    out["optimizer"] = "adamw"
    out["optimizer_config"] = {"adamw": {"weight_decay": t.weight_decay}}
    if t.lr_schedule == "cosine" or t.warmup_steps:
        decay = [t.learning_rate, max(t.iters - t.warmup_steps, 1), t.min_learning_rate]
        schedule: dict[str, Any] = {"name": "cosine_decay", "arguments": decay} \
            if t.lr_schedule == "cosine" else {"name": "linear_schedule", "arguments": [t.learning_rate, t.learning_rate, 1]}
        if t.warmup_steps:
            schedule["warmup"] = t.warmup_steps
        out["lr_schedule"] = schedule
    defaults = Config()
    for spec in iter_fields():
        if spec.path in EXPRESSED_ELSEWHERE or spec.path == "model.resolved_path":
            continue
        if get_value(cfg, spec.path) != get_value(defaults, spec.path) or spec.path in ("model.quantize.group_size",):
            if spec.path == "model.quantize.group_size" and (not bits or cfg.model.quantize.group_size == 64):
                continue
            unmapped.append(f"{spec.path} = {get_value(cfg, spec.path)!r}")
    return yaml.safe_dump(out, sort_keys=False), unmapped


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def preset_text(raw: dict) -> str:
    """The imported table as TOML, the way presets are written."""
    import tomli_w

    return tomli_w.dumps(raw)



def main(argv: list[str]) -> int:
    """`orpo-train import-yaml FILE.yaml [--out PRESET.toml]` and
    `orpo-train export-yaml PRESET.toml [--out FILE.yaml]`: the converted file to --out or
    stdout; the keys that did not carry over, one per line, on stderr."""
    import argparse
    import sys
    from pathlib import Path

    from trainer.pure.config import load_preset
    from trainer.pure.runs import atomic_write_text
    from trainer.pure.trainer_process import ExitCode

    parser = argparse.ArgumentParser(prog=f"orpo-train {argv[0]}")
    parser.add_argument("source")
    parser.add_argument("--out")
    args = parser.parse_args(argv[1:])
    try:
        if argv[0] == "import-yaml":
            try:
                text = Path(args.source).read_text(encoding="utf-8")
            except OSError as exc:
                raise InteropError(f"{args.source}: {exc.strerror or exc}") from None
            raw, unmapped = import_yaml(text, args.source)
            result = preset_text(raw)
        else:
            result, unmapped = export_yaml(load_preset(args.source))
    except (InteropError, ConfigError) as exc:
        print(f"orpo-train {argv[0]}: {exc}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if args.out:
        atomic_write_text(Path(args.out), result)
    else:
        sys.stdout.write(result)
    for key in unmapped:
        print(f"not carried over: {key}", file=sys.stderr)
    return ExitCode.OK
