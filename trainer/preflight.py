"""Dataset preflight: what a preset's data looks like to the trainer, without training.

    orpo-train preflight PRESET.toml [--set section.key=value ...]

prints one JSON object on one line (see `preflight` for its keys) and exits 0, or 2 when
the report's `error` is set (a bad preset, unreadable data, a missing column, a model whose
tokenizer cannot be loaded), 1 on an unexpected failure. The TUI runs this in a subprocess
because it must never import mlx, mlx_lm or datasets itself.

Everything is computed by the trainer's own data pipeline (`load_splits`, `tokenize_rows`,
`collate`), so the report cannot disagree with what a run would do. Only the tokenizer is
loaded, never the weights.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import traceback
from collections.abc import Sequence
from contextlib import redirect_stdout
from statistics import fmean
from typing import Any

from trainer.data import DataError, Pair, Row, collate, load_splits, pad_id, tokenize_rows, truncate_pair
from trainer.model import ModelError, resolve_model_path
from trainer.pure.config import Config, ConfigError, apply_overrides, check, load_preset
from trainer.pure.messages import describe
from trainer.pure.trainer_process import ExitCode

# Long enough that no real pair is cut: token statistics describe the data as written.
_NO_LIMIT = 1 << 62


def preflight(cfg: Config) -> dict[str, Any]:
    """The report for `cfg`'s data, JSON-serialisable.

    A DataError or ModelError does not raise: it ends the report early with `error` set,
    keeping what was learnt before it (the columns found, when one is missing).
    """
    report = empty_report(cfg)
    try:
        splits = load_splits(cfg.data, cfg.training.seed)
    except DataError as exc:
        if exc.columns is not None:
            report["columns"] = _columns(exc.columns, cfg)
            report["format"] = _format(exc.columns, cfg)
        report["error"] = str(exc)
        return report

    d = cfg.data
    report["source"] = splits.source
    report["format"] = _format(splits.columns, cfg, splits.train[0])
    report["splits"] = {
        "train": len(splits.train),
        "valid": len(splits.valid),
        "valid_held_out": splits.valid_held_out,
    }
    report["columns"] = _columns(splits.columns, cfg)
    warnings = report["warnings"]
    warnings.extend(splits.notes)
    if d.preference_score_feature and d.preference_score_feature in splits.columns:
        report["preference_score"] = _score_stats(splits.train + splits.valid)
        outside = report["preference_score"]["outside_0_1"]
        if outside:
            lo, hi = report["preference_score"]["min"], report["preference_score"]["max"]
            warnings.append(f"{outside} {d.preference_score_feature} values are outside 0..1 (range {lo:g} … {hi:g})")
    if len(splits.train) < cfg.training.batch_size:
        warnings.append(
            f"the train split has {len(splits.train)} rows, fewer than training.batch_size = "
            f"{cfg.training.batch_size}: a run would not start"
        )

    try:
        model_path = resolve_model_path(cfg.model.path)
        tokenizer = _load_tokenizer(model_path)
    except ModelError as exc:
        report["error"] = str(exc)
        return report

    over, tokens, split_pairs = {}, {}, {}
    for name, rows in (("train", splits.train), ("valid", splits.valid)):
        try:
            pairs, _ = tokenize_rows(rows, tokenizer, _NO_LIMIT)
        except DataError as exc:  # a chat row the tokenizer cannot render
            report["error"] = str(exc)
            return report
        split_pairs[name] = pairs
        # `Pair.length` over the limit is exactly when `tokenize_rows` truncates a pair.
        count = sum(p.length > d.max_seq_length for p in pairs)
        over[name] = {"count": count, "share": count / len(pairs) if pairs else 0.0}
        tokens[name] = _token_stats(pairs)
        if count:
            warnings.append(
                f"{over[name]['share']:.1%} of {name} rows ({count} of {len(pairs)}) are longer than "
                f"data.max_seq_length = {d.max_seq_length} tokens and will be truncated"
            )
    report["over_max_seq_length"] = over
    report["tokens"] = tokens
    try:
        report["memory"] = _memory(cfg, model_path, tokenizer, split_pairs)
    except Exception:  # noqa: BLE001 - the estimate must not cost the user the data report; stderr has why
        traceback.print_exc()
    report["first_row"] = first_row(splits.train[0], tokenizer, d.max_seq_length)
    return report


def empty_report(cfg: Config | None) -> dict[str, Any]:
    """Every key present, unknowns null, so readers never need to test for a key."""
    return {
        "source": cfg.data.path if cfg else None,
        "format": None,
        "splits": None,
        "columns": {"found": None, "expected": _expected(cfg), "missing": [], "unused": []} if cfg else None,
        "preference_score": None,
        "max_seq_length": cfg.data.max_seq_length if cfg else None,
        "over_max_seq_length": None,
        "tokens": None,
        "memory": None,
        "first_row": None,
        "warnings": [],
        "hosts": None,  # with distributed.hostfile: one line per host problem ([]: every host ready)
        "error": None,
    }


# ---------------------------------------------------------------------------- columns and scores


def _expected(cfg: Config) -> dict[str, str]:
    d = cfg.data
    return {
        "prompt_feature": d.prompt_feature,
        "chosen_feature": d.chosen_feature,
        "rejected_feature": d.rejected_feature,
        "preference_score_feature": d.preference_score_feature,
    }


def _columns(found: Sequence[str], cfg: Config) -> dict[str, Any]:
    expected = _expected(cfg)
    required = (cfg.data.chosen_feature, cfg.data.rejected_feature)
    return {
        "found": list(found),
        "expected": expected,
        "missing": [c for c in required if c not in found],
        "unused": [c for c in found if c not in expected.values()],
    }


def _format(found: Sequence[str], cfg: Config, row: Row | None = None) -> str:
    # The same rules as `rows_from_records`: a prompt column, when present, is masked; chat
    # rows (message lists, or strings wrapped by data.apply_chat_template) are templated.
    if row is not None and row.chat is not None:
        return "prompt+chat_template" if row.chat.wrapped else "conversational"
    return "prompt" if cfg.data.prompt_feature in found else "flat"


def _score_stats(rows: Sequence[Row]) -> dict[str, Any]:
    # Row.score is what training weighs a pair by (a blank score counts as 1.0), so the
    # range shown is the range the loss will see.
    scores = [r.score for r in rows]
    return {
        "min": min(scores),
        "max": max(scores),
        "mean": round(fmean(scores), 4),
        "outside_0_1": sum(not 0.0 <= s <= 1.0 for s in scores),
    }


# ---------------------------------------------------------------------------- tokens


def _memory(cfg: Config, model_path, tokenizer: Any, split_pairs: dict[str, list[Pair]]) -> dict[str, Any] | None:
    """The run's peak memory at these pairs' lengths (cut to max_seq_length as training
    cuts them) and in the worst case, against the device's memory, as `orpo-train estimate`
    reports it; None when the model's shape is unknown."""
    from trainer.memory import device_memory, run_estimate

    limit = cfg.data.max_seq_length
    train, valid = ([truncate_pair(p, limit) for p in split_pairs[name]] for name in ("train", "valid"))
    if not train:
        return None
    est = run_estimate(cfg, model_path, train, valid, pad_id(tokenizer))
    if est is None:
        return None
    device = device_memory()
    return {
        "peak_memory_gb": est.peak_bytes / 1e9,
        "peak_memory_gb_worst": est.worst_bytes / 1e9,
        "device_memory_gb": device.bytes / 1e9 if device else None,
        "device_memory_source": device.what if device else None,
        "fits": est.peak_bytes <= device.bytes if device else None,
    }


def _load_tokenizer(path) -> Any:
    from mlx_lm.utils import load_tokenizer

    try:
        return load_tokenizer(path)
    except Exception as exc:  # transformers raises many types; the user needs one line
        lines = str(exc).strip().splitlines()
        raise ModelError(f"model.path: {path}: no usable tokenizer: {lines[0] if lines else type(exc).__name__}") from None


def _token_stats(pairs: Sequence[Pair]) -> dict[str, Any] | None:
    if not pairs:
        return None
    return {
        "prompt_mean": round(fmean(len(p.prompt) for p in pairs), 1),
        "chosen_mean": round(fmean(len(p.chosen) for p in pairs), 1),
        "rejected_mean": round(fmean(len(p.rejected) for p in pairs), 1),
        "longest": max(p.length for p in pairs),
    }


def first_row(row: Row, tokenizer: Any, max_seq_length: int) -> dict[str, Any]:
    """`row` as the model sees it: truncated as in training, decoded token by token group,
    each group marked scored or not by the very mask the loss uses (`collate`)."""
    pair = tokenize_rows([row], tokenizer, max_seq_length)[0][0]
    mask = collate([pair], pad_id=0)["mask"]
    segments: list[dict[str, Any]] = []
    n_prompt = len(pair.prompt)
    for i, (role, completion) in enumerate((("chosen", pair.chosen), ("rejected", pair.rejected))):
        seq = pair.prompt + completion
        # mask[i, t] scores target t, which is token t + 1; the first token is never a target.
        scored = [False] + [bool(m) for m in mask[i, : len(seq) - 1]]
        roles = ["prompt"] * n_prompt + [role] * len(completion)
        # The prompt is shared by both sequences: show it once, before the chosen answer.
        start = 0 if i == 0 else n_prompt
        runs = itertools.groupby(range(start, len(seq)), key=lambda j: (roles[j], scored[j]))
        for (run_role, run_scored), idx in runs:
            ids = [seq[j] for j in idx]
            segments.append(
                {"text": tokenizer.decode(ids), "role": run_role, "scored": run_scored, "tokens": len(ids)}
            )
    return {"origin": row.origin, "segments": segments}


# ---------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orpo-train preflight",
        description="Check a preset's dataset without training; prints a JSON report.",
    )
    p.add_argument("preset", help="preset TOML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a preset value (repeatable)")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    code = ExitCode.OK
    try:
        cfg = load_preset(args.preset)
        cfg = apply_overrides(cfg, args.overrides)
        check(cfg, args.preset)
    except ConfigError as exc:
        report = empty_report(None)
        report["error"] = str(exc)
    else:
        try:
            # Libraries that print would corrupt the one JSON line stdout must carry.
            with redirect_stdout(sys.stderr):
                report = preflight(cfg)
        except Exception as exc:  # a bug, not bad input: traceback on stderr, one line in JSON
            traceback.print_exc()
            report = empty_report(cfg)
            report["error"] = describe(exc)
            code = ExitCode.ERROR
        try:
            from trainer.hosts import hostfile_lines

            report["hosts"] = hostfile_lines(cfg)
        except Exception as exc:  # noqa: BLE001 - a bug here must not cost the data report
            traceback.print_exc()
            report["hosts"] = [f"the host check failed: {describe(exc)}"]
    print(json.dumps(report), flush=True)
    if report["error"] is not None and code == ExitCode.OK:
        code = ExitCode.BAD_INPUT
    return code
