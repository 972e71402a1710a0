"""Preference data: any source `datasets` reads -> validated rows -> token pairs -> batches.

Sources: `builtin:demo`, a local folder holding `<split>.jsonl|.json|.parquet` files, a single
local file, or a hub dataset id; `trainer.pure.sources` says which one `data.path` names and
which files hold its splits, so the app counts the same rows this module loads. Rows are
either flat (chosen and rejected scored verbatim) or carry a prompt: the prompt is tokenized
on its own and the completions after it, so the boundary between them is exact and the
prompt's tokens are masked out of the loss.

Chat rows go through the tokenizer's chat template first. They are TRL's conversational
preference rows (`prompt`, `chosen` and `rejected` lists of {role, content} messages; without
a `prompt` the shared leading messages of chosen and rejected are the prompt), or plain
prompt/completion strings wrapped as one user and one assistant message when
`data.apply_chat_template` is on. `render_row` turns a chat row into the prompt as the
template renders it with the generation prompt, and each completion as the rest of the
rendered conversation, so only the assistant turn(s), with the template's own end-of-turn
tokens, are scored.

Every problem with the data is a `DataError` whose message is one line naming the file (or
dataset) and the row, so the CLI can print it and exit 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from trainer.pure.config import DataConfig  # noqa: F401 (annotations)
from trainer.pure.messages import first_line, hub_offline
from trainer.pure.sources import (
    SourceError,
    SourceKind,
    file_format,
    held_out_count,
    resolve_source,
    split_files,
    valid_split_names,
)

# Every padded size (a batch's width, its count of scored positions) is rounded up to a
# ladder (`bucket`): multiples of a floor, then STEPS_PER_DOUBLING sizes between each power
# of two and the next. The compiled step traces each distinct shape once and keeps a bounded
# number of them (step.ShapeBoundedStep), so the sizes must be few whatever the data: a
# ladder gives a few per doubling of the longest row, where plain multiples grew with it.
# It pads at most 1/STEPS_PER_DOUBLING more (tests/bench/README.md, "step_shapes.py").
STEPS_PER_DOUBLING = 4
# The floors: batch widths are multiples of at least PAD_MULTIPLE, scored-position counts
# of at least GATHER_MULTIPLE.
PAD_MULTIPLE = 16
GATHER_MULTIPLE = 64


def bucket(n: int, floor: int) -> int:
    """`n` rounded up to the ladder: a multiple of `floor`, and of a quarter (with
    STEPS_PER_DOUBLING = 4) of the largest power of two not above `n`."""
    step = max(floor, (1 << max(n, 1).bit_length() - 1) // STEPS_PER_DOUBLING)
    return -(-n // step) * step


class DataError(Exception):
    """A problem with the training data, described in one line.

    `columns` lists the columns the source does have when the problem is a missing one, so
    a preflight can still show them.
    """

    def __init__(self, message: str, columns: Sequence[str] | None = None):
        super().__init__(message)
        self.columns = list(columns) if columns is not None else None


Message = dict[str, Any]  # {"role": str, "content": str, ...}; keys with None values dropped


@dataclass(frozen=True)
class Chat:
    """The messages of a chat row: the prompt (user side) and each completion."""

    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    wrapped: bool = False  # plain strings wrapped by data.apply_chat_template


@dataclass(frozen=True)
class Row:
    """One validated preference row. For a chat row, `chat` holds the messages that are
    tokenized; `prompt`, `chosen` and `rejected` are then only a plain-text view of them (the
    last prompt message, the completions' contents)."""

    prompt: str | None
    chosen: str
    rejected: str
    score: float
    origin: str  # "file: row N", for messages
    chat: Chat | None = None


@dataclass(frozen=True)
class Rendered:
    """A row as the texts that are tokenized.

    `templated`: the texts come from a chat template, so they already hold every special
    token the model expects (BOS, end-of-turn): they are tokenized with
    add_special_tokens=False and no EOS is appended to the completions.
    `exact`: the completions are the suffix of the conversation after `prompt`. When False
    (a template that does not render the prompt as a prefix of the whole conversation),
    `chosen` and `rejected` are the whole renders and the prompt is their common token prefix.
    """

    prompt: str | None
    chosen: str
    rejected: str
    templated: bool = False
    exact: bool = True


@dataclass(frozen=True)
class Pair:
    """One tokenized preference pair. `prompt` is empty for flat rows."""

    prompt: tuple[int, ...]
    chosen: tuple[int, ...]
    rejected: tuple[int, ...]
    score: float

    @property
    def length(self) -> int:
        return len(self.prompt) + max(len(self.chosen), len(self.rejected))


@dataclass
class Splits:
    train: list[Row]
    valid: list[Row]
    source: str
    notes: list[str]
    columns: list[str] = field(default_factory=list)  # of the train split, extras included
    valid_held_out: bool = False


# ---------------------------------------------------------------------------- locating data


def load_splits(cfg: DataConfig, seed: int) -> Splits:
    """Read and validate the train and valid rows the config points at."""
    notes: list[str] = []
    try:
        found = resolve_source(cfg.path)
        files = None if found.kind is SourceKind.HUB else split_files(found, cfg)
    except SourceError as exc:
        raise DataError(str(exc)) from None
    if files is None:
        train, valid, columns = _rows_from_hub(cfg.path, cfg)
        source = cfg.path
    else:
        train, columns = _rows_from_file(files.train, cfg)
        valid = _rows_from_file(files.valid, cfg)[0] if files.valid else None
        source = str(found.path)

    if not train:
        raise DataError(f"{source}: the {cfg.train_split} split has no rows")
    held_out = valid is None
    if held_out:
        train, valid = _hold_out(train, cfg.valid_fraction, seed)
        if valid:
            notes.append(
                f"no validation split found: held out {len(valid)} of "
                f"{len(train) + len(valid)} rows (data.valid_fraction = {cfg.valid_fraction})"
            )
        else:
            notes.append("no validation split and data.valid_fraction = 0: no validation")
    return Splits(train, valid, source, notes, columns, valid_held_out=held_out and bool(valid))


def _hold_out(rows: list[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    n_valid = held_out_count(len(rows), fraction)
    if not n_valid:
        return rows, []
    order = np.random.default_rng(seed).permutation(len(rows))
    held = set(order[:n_valid].tolist())
    return (
        [r for i, r in enumerate(rows) if i not in held],
        [r for i, r in enumerate(rows) if i in held],
    )


def _check_jsonl(path: Path) -> None:
    """`datasets` reports a broken JSON line without saying which; find it ourselves."""
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
                raise DataError(f"{path}: row {number}: not valid JSON ({msg})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}: row {number}: expected a JSON object")


def _rows_from_file(path: Path, cfg: DataConfig) -> tuple[list[Row], list[str]]:
    try:
        kind = file_format(path)
    except SourceError as exc:
        raise DataError(str(exc)) from None
    if kind == "jsonl":
        _check_jsonl(path)
    if kind != "parquet" and _is_blank(path):
        # `datasets` reports an empty JSON file as a bare StopIteration.
        raise DataError(f"{path}: is empty (no rows)")
    builder = "parquet" if kind == "parquet" else "json"
    load_dataset = _datasets_loader()

    try:
        table = load_dataset(builder, data_files={"rows": str(path)}, split="rows")
    except Exception as exc:  # datasets raises many types; the user needs one line
        raise DataError(f"{path}: could not be read: {first_line(exc)}") from None
    if len(table) == 0:
        raise DataError(f"{path}: has no rows")
    return rows_from_records(table.to_list(), table.column_names, str(path), cfg), table.column_names


def _is_blank(path: Path, chunk: int = 1 << 16) -> bool:
    """Whether a text file holds nothing but whitespace, reading only until it finds more."""
    try:
        with path.open("rb") as fh:
            while block := fh.read(chunk):
                if block.strip():
                    return False
    except OSError as exc:
        raise DataError(f"{path}: could not be read: {exc.strerror or exc}") from None
    return True


def _datasets_loader():
    """`datasets` is imported only when data is really read (it is slow to import), with its
    progress bars off: they would fill train.log with carriage-return noise."""
    import datasets

    datasets.disable_progress_bars()
    return datasets.load_dataset


def _rows_from_hub(name: str, cfg: DataConfig) -> tuple[list[Row], list[Row] | None, list[str]]:
    load_dataset = _datasets_loader()

    try:
        ds = load_dataset(name)
    except Exception as exc:
        why = "offline and not in the local cache" if hub_offline() else first_line(exc)
        raise DataError(f"data.path: hub dataset '{name}': {why}") from None
    if cfg.train_split not in ds:
        raise DataError(
            f"{name}: no '{cfg.train_split}' split (splits: {', '.join(ds.keys())})"
        )
    train_ds = ds[cfg.train_split]
    train = rows_from_records(
        train_ds.to_list(), train_ds.column_names, f"{name}[{cfg.train_split}]", cfg
    )
    for split in valid_split_names(cfg.valid_split):
        if split in ds:
            valid_ds = ds[split]
            return train, rows_from_records(
                valid_ds.to_list(), valid_ds.column_names, f"{name}[{split}]", cfg
            ), train_ds.column_names
    return train, None, train_ds.column_names


# ---------------------------------------------------------------------------- validating rows


def rows_from_records(
    records: Sequence[dict[str, Any]], columns: Iterable[str], source: str, cfg: DataConfig
) -> list[Row]:
    """Validate raw records against the configured column names."""
    columns = list(columns)
    for key in ("chosen_feature", "rejected_feature"):
        name = getattr(cfg, key)
        if name not in columns:
            raise DataError(
                f"{source}: no '{name}' column (columns: {', '.join(columns)}); "
                f"set data.{key} to the right one",
                columns=columns,
            )
    has_prompt = cfg.prompt_feature in columns
    has_score = cfg.preference_score_feature in columns
    wrap = cfg.apply_chat_template
    if wrap and not has_prompt:
        raise DataError(
            f"{source}: data.apply_chat_template needs a '{cfg.prompt_feature}' column for the "
            f"user message (columns: {', '.join(columns)})",
            columns=columns,
        )

    rows = []
    first_kind = None
    for index, record in enumerate(records, start=1):
        origin = f"{source}: row {index}"
        kind = _row_kind(record, cfg, has_prompt, origin)
        if first_kind is None:
            first_kind = kind
        elif kind != first_kind:
            raise DataError(
                f"{origin}: {kind} row in a dataset of {first_kind} rows (row 1); rows must not mix formats"
            )
        score = _score(record, cfg.preference_score_feature, origin) if has_score else 1.0
        if kind == "conversational":
            rows.append(_chat_row(record, cfg, has_prompt, score, origin))
            continue
        chosen = _text(record, cfg.chosen_feature, origin)
        rejected = _text(record, cfg.rejected_feature, origin)
        prompt = _text(record, cfg.prompt_feature, origin) if has_prompt else None
        chat = None
        if wrap:
            chat = Chat(
                ({"role": "user", "content": prompt},),
                ({"role": "assistant", "content": chosen},),
                ({"role": "assistant", "content": rejected},),
                wrapped=True,
            )
        rows.append(Row(prompt, chosen, rejected, score, origin, chat))
    return rows


def _row_kind(record: dict[str, Any], cfg: DataConfig, has_prompt: bool, origin: str) -> str:
    """"conversational" when the row's texts are message lists, "plain" when strings; a row
    mixing the two is an error."""
    keys = [cfg.chosen_feature, cfg.rejected_feature]
    if has_prompt and record.get(cfg.prompt_feature) is not None:
        keys.insert(0, cfg.prompt_feature)
    lists = [k for k in keys if isinstance(record.get(k), (list, tuple))]
    if not lists:
        return "plain"
    others = [k for k in keys if k not in lists and record.get(k) is not None]
    if others:
        raise DataError(
            f"{origin}: mixes formats: '{lists[0]}' is a list of messages but '{others[0]}' is "
            f"a {type(record.get(others[0])).__name__}"
        )
    return "conversational"


def _messages(record: dict[str, Any], column: str, origin: str) -> list[Message]:
    value = record.get(column)
    if value is None:
        raise DataError(f"{origin}: '{column}' is missing")
    if not value:
        raise DataError(f"{origin}: '{column}' has no messages")
    out = []
    for number, message in enumerate(value, start=1):
        where = f"{origin}: '{column}' message {number}"
        if not isinstance(message, dict):
            raise DataError(f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}")
        for key in ("role", "content"):
            if message.get(key) is None:
                raise DataError(f"{where}: '{key}' is missing")
            if not isinstance(message[key], str):
                raise DataError(f"{where}: '{key}' must be a string, got {type(message[key]).__name__}")
        if not message["role"].strip():
            raise DataError(f"{where}: 'role' is empty")
        # Arrow gives every message every key seen in the column; absent ones come back as
        # None and must not reach the template as if they were set.
        out.append({k: v for k, v in message.items() if v is not None})
    return out


def _chat_row(record: dict[str, Any], cfg: DataConfig, has_prompt: bool, score: float, origin: str) -> Row:
    """A TRL conversational row. Without a prompt, the messages chosen and rejected share
    at the start are the prompt (TRL's implicit prompt)."""
    chosen = _messages(record, cfg.chosen_feature, origin)
    rejected = _messages(record, cfg.rejected_feature, origin)
    if has_prompt and record.get(cfg.prompt_feature) is not None:
        prompt = _messages(record, cfg.prompt_feature, origin)
    else:
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
        if not prompt:
            raise DataError(
                f"{origin}: no '{cfg.prompt_feature}' and '{cfg.chosen_feature}' and "
                f"'{cfg.rejected_feature}' share no leading messages to use as the prompt"
            )
        for column, completion in ((cfg.chosen_feature, chosen), (cfg.rejected_feature, rejected)):
            if not completion:
                raise DataError(f"{origin}: '{column}' has nothing after the shared prompt messages")
    for column, completion in ((cfg.chosen_feature, chosen), (cfg.rejected_feature, rejected)):
        # Only assistant turns may be scored: a user turn here would be trained on too.
        for message in completion:
            if message["role"] != "assistant":
                raise DataError(
                    f"{origin}: '{column}' holds a '{message['role']}' message after the prompt; "
                    f"completions must be assistant messages"
                )
    return Row(
        prompt[-1]["content"],
        "".join(m["content"] for m in chosen),
        "".join(m["content"] for m in rejected),
        score,
        origin,
        Chat(tuple(prompt), tuple(chosen), tuple(rejected)),
    )


def _text(record: dict[str, Any], column: str, origin: str) -> str:
    value = record.get(column)
    if value is None:
        raise DataError(f"{origin}: '{column}' is missing")
    if not isinstance(value, str):
        raise DataError(f"{origin}: '{column}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{origin}: '{column}' is empty")
    return value


def _score(record: dict[str, Any], column: str, origin: str) -> float:
    value = record.get(column)
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or abs(value) > FLOAT32_MAX:
        # Scores are float32 on the device: a larger one becomes inf there and the run would
        # fail steps later on "loss became inf" with no word about this row.
        raise DataError(f"{origin}: '{column}' must be a finite float32 number (|x| <= {FLOAT32_MAX:.4g}), got {value!r}")
    return float(value)


FLOAT32_MAX = 3.4028234663852886e38

# ---------------------------------------------------------------------------- tokenizing


@dataclass
class TokenStats:
    pairs: int = 0
    truncated: int = 0
    tokens: int = 0


def render_row(row: Row, tokenizer: Any) -> Rendered:
    """The texts `tokenize_rows` tokenizes for `row`: a plain row's own strings, or a chat
    row rendered with the tokenizer's chat template.

    The prompt is `apply_chat_template(prompt, add_generation_prompt=True)`; each completion
    is what the whole conversation `apply_chat_template(prompt + completion)` adds after it,
    so it holds the assistant turn(s) with the template's end-of-turn token(s) and nothing of
    the prompt.
    """
    if row.chat is None:
        return Rendered(row.prompt, row.chosen, row.rejected)
    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx_lm wraps the HF tokenizer
    if not getattr(hf, "chat_template", None):
        needs = "data.apply_chat_template = true" if row.chat.wrapped else f"the conversational row {row.origin}"
        raise DataError(f"model.path: {_model_name(hf)}: the tokenizer has no chat template, which {needs} needs")
    chat = row.chat
    try:
        prompt = hf.apply_chat_template(list(chat.prompt), add_generation_prompt=True, tokenize=False)
        chosen = hf.apply_chat_template(list(chat.prompt + chat.chosen), tokenize=False)
        rejected = hf.apply_chat_template(list(chat.prompt + chat.rejected), tokenize=False)
    except Exception as exc:  # jinja raises for conversations a template refuses
        raise DataError(f"{row.origin}: the chat template refused this conversation: {first_line(exc)}") from None
    if chosen.startswith(prompt) and rejected.startswith(prompt):
        return Rendered(prompt, chosen[len(prompt) :], rejected[len(prompt) :], templated=True)
    # Some templates render the last assistant turn differently from the generation prompt
    # (an inserted empty reasoning block, say), so the prompt render is not a prefix of the
    # conversation. Then the boundary is the longest token prefix the prompt shares with both
    # conversations (`tokenize_rows`); what follows it, the differing bit included, is scored.
    return Rendered(prompt, chosen, rejected, templated=True, exact=False)


def _model_name(hf: Any) -> str:
    return str(getattr(hf, "name_or_path", "") or "this model")


def _common_prefix(*seqs: Sequence[int]) -> int:
    n = 0
    for column in zip(*seqs):
        if any(t != column[0] for t in column):
            break
        n += 1
    return n


def tokenize_rows(rows: Sequence[Row], tokenizer: Any, max_seq_length: int) -> tuple[list[Pair], TokenStats]:
    """Tokenize rows into pairs. Plain completions end with EOS so the model learns to stop;
    templated ones end with the template's own end-of-turn token(s) instead."""
    hf = getattr(tokenizer, "_tokenizer", tokenizer)  # mlx_lm wraps the HF tokenizer
    eos = tokenizer.eos_token_id
    texts = [render_row(r, tokenizer) for r in rows]

    def encode(texts: list[str], special: bool) -> list[list[int]]:
        if not texts:
            return []
        return hf(texts, add_special_tokens=special)["input_ids"]

    # Batch encoding goes through the fast tokenizer's Rust side in one call per column. A
    # plain prompt gets the tokenizer's special tokens (BOS); a templated one has them already.
    plain_prompts = iter(encode([t.prompt for t in texts if t.prompt is not None and not t.templated], True))
    chat_prompts = iter(encode([t.prompt for t in texts if t.templated], False))
    # A flat row has no prompt: its text is tokenized whole, special tokens included.
    chosen = iter(encode([t.chosen for t in texts], False))
    rejected = iter(encode([t.rejected for t in texts], False))
    flat_prefix = encode([""], True)[0]

    stats = TokenStats()
    pairs = []
    for row, text in zip(rows, texts):
        c, r = next(chosen), next(rejected)
        if text.templated:
            prompt = next(chat_prompts)
            if not text.exact:
                n = _common_prefix(prompt, c, r)
                prompt, c, r = c[:n], c[n:], r[n:]
        else:
            prompt = next(plain_prompts) if text.prompt is not None else flat_prefix
            c, r = c + [eos], r + [eos]
        if not c or not r:
            raise DataError(f"{row.origin}: a completion renders to no tokens")
        prompt, c, r, cut = _truncate(prompt, c, r, max_seq_length)
        stats.truncated += cut
        stats.tokens += 2 * len(prompt) + len(c) + len(r)
        pairs.append(Pair(tuple(prompt), tuple(c), tuple(r), row.score))
    stats.pairs = len(pairs)
    return pairs, stats


def truncate_pair(pair: Pair, limit: int) -> Pair:
    """`pair` as `tokenize_rows` with `limit` would have made it."""
    prompt, chosen, rejected, _ = _truncate(list(pair.prompt), list(pair.chosen), list(pair.rejected), limit)
    return Pair(tuple(prompt), tuple(chosen), tuple(rejected), pair.score)


def _truncate(prompt: list[int], chosen: list[int], rejected: list[int], limit: int):
    """Fit prompt + completion into `limit` tokens.

    The completion is what is scored, so it keeps at least half the budget; the prompt keeps
    its last tokens, those nearest the answer.
    """
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest <= limit:
        return prompt, chosen, rejected, 0
    keep_prompt = min(len(prompt), max(limit - longest, limit // 2))
    room = limit - keep_prompt
    prompt = prompt[len(prompt) - keep_prompt :] if keep_prompt else []
    return prompt, chosen[:room], rejected[:room], 1


# ---------------------------------------------------------------------------- batching


def make_batches(pairs: Sequence[Pair], batch_size: int) -> list[tuple[int, ...]]:
    """Group pairs of similar length so little of each batch is padding.

    Sorting by length, then chunking, keeps batches tight; the order of the batches is
    shuffled per epoch by `batch_order`. The last batch may be short: it holds the longest
    pairs, which training must see too (the loss is a mean, so a short batch is fine).
    """
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    return [tuple(order[i : i + batch_size]) for i in range(0, len(order), batch_size)]


@lru_cache(maxsize=4)
def batch_order(n_batches: int, seed: int, epoch: int) -> np.ndarray:
    """The order of batches in one epoch: a pure function of (seed, epoch), so a resumed run
    sees exactly the batches it would have seen without stopping."""
    return np.random.default_rng([seed, epoch]).permutation(n_batches)


def batch_at(batches: Sequence[tuple[int, ...]], seed: int, index: int) -> tuple[int, ...]:
    """The index-th micro-batch of the endless shuffled stream."""
    epoch, pos = divmod(index, len(batches))
    return batches[int(batch_order(len(batches), seed, epoch)[pos])]


def pad_id(tokenizer: Any) -> int:
    """What batches are padded with: the tokenizer's pad token, else its end of sequence."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def collate(pairs: Sequence[Pair], pad_id: int, at_least: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Chosen and rejected sequences stacked into one [2B, T] batch (chosen first).

    `mask[i, t]` is 1 where target token t is part of the completion, so prompts and padding
    never count in the log-probs. `at_least` (from `padded_sizes` of other batches) pads
    further, to give this batch the same shapes as theirs.
    """
    at_least = at_least or {}
    seqs = [p.prompt + p.chosen for p in pairs] + [p.prompt + p.rejected for p in pairs]
    # Target t predicts token t+1; a flat row (no prompt) cannot score its first token.
    inputs, targets, mask = pad_rows(seqs, [max(len(p.prompt) - 1, 0) for p in pairs] * 2, pad_id, PAD_MULTIPLE,
                                     at_least.get("width", 0))
    return {
        "inputs": inputs,
        "targets": targets,
        "mask": mask,
        "scores": np.array([p.score for p in pairs], dtype=np.float32),
        "tokens": int(sum(len(s) for s in seqs)),
        # Where the scored tokens are, for projecting only them onto the vocabulary.
        "gather": (gather := scored_positions(mask, GATHER_MULTIPLE, at_least.get("gather", 0))),
        "sizes": {"width": inputs.shape[1], "gather": len(gather[0])},
    }


def padded_sizes(batches: Sequence[dict]) -> dict[str, int]:
    """The largest of each padded size (widths, scored-position counts) over host batches of
    one layout, keyed as `collate` and `shared_prefix.collate_shared` take them in `at_least`."""
    sizes: dict[str, int] = {}
    for batch in batches:
        for key, n in batch["sizes"].items():
            sizes[key] = max(sizes.get(key, 0), n)
    return sizes


def pad_rows(seqs: Sequence[Sequence[int]], starts: Sequence[int], pad_id: int, floor: int,
             at_least: int = 0) -> tuple[np.ndarray, ...]:
    """Right-padded (inputs, targets, mask) of token sequences, the width rounded up to the
    ladder of `bucket(_, floor)` (or to `at_least`, when wider); `starts[i]` is the first
    scored input position of row i."""
    width = max(bucket(max(len(s) - 1 for s in seqs), floor), at_least)
    inputs = np.full((len(seqs), width), pad_id, dtype=np.int32)
    targets = np.full((len(seqs), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), width), dtype=np.float32)
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        n = len(seq) - 1
        inputs[i, :n] = seq[:-1]
        targets[i, :n] = seq[1:]
        mask[i, max(start, 0) : n] = 1.0
    return inputs, targets, mask


def scored_positions(mask: np.ndarray, floor: int = GATHER_MULTIPLE, at_least: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat index, row, weight) of each scored position of a [rows, T] mask, padded with
    weight-0 entries up to the ladder of `bucket(_, floor)` (or to `at_least`) so compiled
    shapes repeat."""
    rows, cols = np.nonzero(mask)
    room = max(bucket(len(rows), floor), at_least)
    index = np.zeros(room, dtype=np.int32)
    index[: len(rows)] = rows * mask.shape[1] + cols
    row_of = np.zeros(room, dtype=np.int32)
    row_of[: len(rows)] = rows
    weights = np.zeros(room, dtype=np.float32)
    weights[: len(rows)] = 1.0
    return index, row_of, weights
