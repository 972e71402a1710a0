"""The experiment configuration: one frozen dataclass tree, TOML in and out.

Every leaf field is declared with :func:`opt`, whose metadata (help text, range,
choices) is the single source for validation, for ``--set`` parsing and for the
TUI form (:func:`iter_fields`).  Nothing here imports mlx, datasets or textual:
the app imports this module and must start fast.

Loading is strict on purpose: an unknown key or a value of the wrong type is an
error, because a silently ignored typo in a preset wastes a whole training run.
Every error is a :class:`ConfigError` whose text is one line naming the source
(file or ``--set``) and the dotted key.

Constructing the dataclasses directly does *not* validate, so the form can hold
a half-edited config; :func:`validate` and :func:`check` report the problems.
"""

import dataclasses
import difflib
import math
import re
import sys
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Tuple

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

import tomli_w

__all__ = [
    "ConfigError",
    "Problem",
    "FieldSpec",
    "SectionSpec",
    "Config",
    "ModelConfig",
    "QuantizeConfig",
    "DataConfig",
    "OrpoConfig",
    "FinetuneConfig",
    "QatConfig",
    "TrainingConfig",
    "OutputConfig",
    "iter_fields",
    "iter_sections",
    "load_preset",
    "parse_preset_text",
    "read_preset_text",
    "config_from_dict",
    "config_to_dict",
    "dump_toml",
    "apply_overrides",
    "parse_value",
    "validate",
    "validate_field",
    "check",
    "get_value",
    "replace_value",
]


class ConfigError(Exception):
    """A problem with a preset or an override, as one printable line.

    ``source`` is the file name or ``"--set"`` (empty when there is none),
    ``key`` the dotted key concerned (or None), ``problem`` the text after the
    source prefix.
    """

    def __init__(self, source: str, problem: str, key: Optional[str] = None):
        self.source = source
        self.key = key
        self.problem = _one_line(problem)
        text = f"{source}: {self.problem}" if source else self.problem
        super().__init__(text)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config: the dotted key, the value found there, and what is
    wrong with it (one line, without the key)."""

    key: str
    value: Any
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


def _one_line(text: str) -> str:
    # Callers print these on a terminal or next to a form field: a newline
    # inside would break the "one clear line" contract of the CLI.
    return " ".join(str(text).split())


# --------------------------------------------------------------------------
# Field declaration helpers
# --------------------------------------------------------------------------

_RULE = "orpo_tui.rule"
_SECTION = "orpo_tui.section"


@dataclass(frozen=True)
class _Rule:
    help: str
    min: Any = None
    max: Any = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: Optional[tuple] = None
    special: Tuple[Tuple[Any, str], ...] = ()
    reserved: bool = False
    unit: Optional[str] = None
    nonempty: bool = False


def opt(
    default: Any,
    help: str,
    *,
    min: Any = None,
    max: Any = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    choices: Optional[Iterable[Any]] = None,
    special: Optional[dict] = None,
    reserved: bool = False,
    unit: Optional[str] = None,
    nonempty: bool = False,
) -> Any:
    """Declare a leaf field.

    ``special`` maps values that are valid outside the range to what they mean
    (``{-1: "all layers"}``); the form can show the label.  ``nonempty`` is for
    strings that must not be blank.
    """
    rule = _Rule(
        help=help,
        min=min,
        max=max,
        min_exclusive=min_exclusive,
        max_exclusive=max_exclusive,
        choices=tuple(choices) if choices is not None else None,
        special=tuple((special or {}).items()),
        reserved=reserved,
        unit=unit,
        nonempty=nonempty,
    )
    return field(default=default, metadata={_RULE: rule})


def section(cls: type, title: str, help: str) -> Any:
    """Declare a sub-table holding another frozen dataclass."""
    return field(default_factory=cls, metadata={_SECTION: (title, help)})


# --------------------------------------------------------------------------
# The tree
# --------------------------------------------------------------------------

_BITS = (2, 3, 4, 5, 6, 8)
_GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class QuantizeConfig:
    bits: int = opt(
        0,
        "Quantize the base model to this many bits before training (0 = keep full precision)",
        choices=(0,) + _BITS,
        special={0: "no quantization"},
        unit="bits",
    )
    group_size: int = opt(
        64, "Number of weights sharing one quantization scale", choices=_GROUP_SIZES
    )


@dataclass(frozen=True)
class ModelConfig:
    path: str = opt(
        "builtin:tiny",
        "Base model: Hugging Face hub id, local folder, or builtin:tiny",
        nonempty=True,
    )
    resolved_path: str = opt(
        "",
        "Local folder the weights were loaded from (set by the trainer in a run's config.toml)",
    )
    quantize: QuantizeConfig = section(
        QuantizeConfig, "Base quantization", "Quantize the frozen base model (QLoRA)"
    )


@dataclass(frozen=True)
class DataConfig:
    path: str = opt(
        "builtin:demo",
        "Dataset: hub id, folder with train/valid JSONL or Parquet, a single file, or builtin:demo",
        nonempty=True,
    )
    prompt_feature: str = opt("prompt", "Column holding the prompt", nonempty=True)
    chosen_feature: str = opt("chosen", "Column holding the preferred answer", nonempty=True)
    rejected_feature: str = opt(
        "rejected", "Column holding the dispreferred answer", nonempty=True
    )
    preference_score_feature: str = opt(
        "preference_score", "Optional column with a preference score (ignored when absent)"
    )
    max_seq_length: int = opt(
        256, "Longest prompt+answer kept, in tokens; longer pairs are truncated", min=8, unit="tokens"
    )
    train_split: str = opt("train", "Name of the training split", nonempty=True)
    valid_split: str = opt("valid", "Name of the validation split, when the dataset has one")
    valid_fraction: float = opt(
        0.05,
        "Fraction of train held out for validation when there is no validation split",
        min=0.0,
        max=0.5,
    )
    apply_chat_template: bool = opt(
        False,
        "Wrap plain-string prompt/completion rows in the model's chat template: prompt as a "
        "user message, completion as the assistant message",
    )


@dataclass(frozen=True)
class OrpoConfig:
    beta: float = opt(0.1, "Weight of the odds-ratio term added to the NLL loss", min=0.0)
    reward_scaling: float = opt(
        1.0,
        "Accepted for mlx-lm-lora compatibility and reserved; has no effect yet",
        reserved=True,
    )


@dataclass(frozen=True)
class FinetuneConfig:
    type: str = opt(
        "lora", "What to train: LoRA adapters, DoRA adapters, or all weights", choices=("lora", "dora", "full")
    )
    rank: int = opt(8, "Rank of the LoRA/DoRA update matrices", min=1)
    scale: float = opt(20.0, "Multiplier applied to the adapter's output", min=0.0, min_exclusive=True)
    dropout: float = opt(0.0, "Dropout on the adapter's input during training", min=0.0, max=1.0, max_exclusive=True)
    num_layers: int = opt(
        -1,
        "How many of the last transformer blocks get adapters (-1 = all)",
        min=1,
        special={-1: "all layers"},
        unit="layers",
    )
    # A tuple keeps the tree hashable and frozen; TOML and --set give lists.
    keys: Tuple[str, ...] = opt(
        (),
        "Module keys to adapt, like self_attn.q_proj (empty = every linear layer)",
    )


@dataclass(frozen=True)
class QatConfig:
    enable: bool = opt(False, "Fake-quantize the weights in the forward pass (quantization-aware training)")
    bits: int = opt(4, "Bits the fake quantizer rounds to", choices=_BITS, unit="bits")
    group_size: int = opt(64, "Weights sharing one fake-quantization scale", choices=_GROUP_SIZES)
    start_step: int = opt(0, "Step at which fake quantization switches on", min=0, unit="steps")


@dataclass(frozen=True)
class TrainingConfig:
    iters: int = opt(200, "Number of optimizer steps", min=1, unit="steps")
    batch_size: int = opt(8, "Preference pairs per step", min=1, unit="pairs")
    learning_rate: float = opt(1e-3, "Peak learning rate (AdamW)", min=0.0, min_exclusive=True)
    lr_schedule: str = opt("constant", "Learning-rate schedule after warmup", choices=("constant", "cosine"))
    warmup_steps: int = opt(0, "Steps of linear warmup from 0 to the learning rate", min=0, unit="steps")
    min_learning_rate: float = opt(0.0, "Floor the cosine schedule decays to", min=0.0)
    weight_decay: float = opt(0.0, "AdamW weight decay", min=0.0)
    max_grad_norm: float = opt(
        0.0, "Clip the gradient norm to this value (0 = no clipping)", min=0.0, special={0.0: "no clipping"}
    )
    seed: int = opt(0, "Random seed for initialization, shuffling and dropout", min=0)
    grad_accumulation_steps: int = opt(
        1, "Micro-batches whose gradients are summed into one optimizer step", min=1
    )
    steps_per_report: int = opt(10, "Write averaged train metrics every this many steps", min=1, unit="steps")
    steps_per_eval: int = opt(
        50, "Run validation every this many steps (0 = never)", min=0, special={0: "no validation"}, unit="steps"
    )
    val_batches: int = opt(
        8, "Validation batches per evaluation (-1 = the whole split)", min=1, special={-1: "all"}, unit="batches"
    )
    save_every: int = opt(50, "Save a resumable checkpoint every this many steps", min=1, unit="steps")
    keep_best: bool = opt(True, "Keep the adapters of the best validation loss in adapters/best beside the latest")
    patience: int = opt(
        0,
        "Stop early after this many evaluations without a new best validation loss (0 = off)",
        min=0,
        special={0: "off"},
        unit="evaluations",
    )
    sample_prompts: int = opt(
        2,
        "Validation prompts to generate a greedy sample for at each evaluation (0 = off)",
        min=0,
        max=16,
        special={0: "off"},
        unit="prompts",
    )
    sample_max_tokens: int = opt(32, "Most tokens generated per sample", min=1, max=1024, unit="tokens")


@dataclass(frozen=True)
class OutputConfig:
    runs_dir: str = opt("runs", "Folder that holds the run directories", nonempty=True)
    name: str = opt("", "Label for the run folder name instead of the preset file name (optional)")


@dataclass(frozen=True)
class Config:
    description: str = opt("", "One-line description shown in the preset list")
    model: ModelConfig = section(ModelConfig, "Model", "The base model and how it is loaded")
    data: DataConfig = section(DataConfig, "Data", "The preference dataset")
    orpo: OrpoConfig = section(OrpoConfig, "ORPO", "The odds-ratio preference loss")
    finetune: FinetuneConfig = section(FinetuneConfig, "Fine-tuning", "Which weights are trained")
    qat: QatConfig = section(QatConfig, "Quantization-aware training", "Train through fake quantization")
    training: TrainingConfig = section(TrainingConfig, "Training", "Optimizer, schedule and reporting")
    output: OutputConfig = section(OutputConfig, "Output", "Where runs are written")


# --------------------------------------------------------------------------
# Introspection for the form
# --------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FieldSpec(_Rule):
    """One leaf field, as the form and the validators see it: the field's rule (help,
    range, choices, ...) plus where the field sits in the tree.

    ``type`` is one of bool, int, float, str or list (a list of strings; the
    config holds it as a tuple, and ``default`` is that tuple).  ``special``
    lists ``(value, meaning)`` pairs that are valid outside ``min``/``max``.
    ``section`` is the top-level table ("" for top-level keys) and
    ``section_title`` its human name.
    """

    path: str
    name: str
    type: type
    default: Any
    section: str = ""
    section_title: str = ""


@dataclass(frozen=True)
class SectionSpec:
    """A table of the tree: dotted path, title and one-line help."""

    path: str
    title: str
    help: str


def _kind(annotation: Any) -> Any:
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) is tuple:
        return list
    if annotation in (bool, int, float, str):
        return annotation
    raise TypeError(f"unsupported config field type {annotation!r}")


def _is_section(f: dataclasses.Field) -> bool:
    return _SECTION in f.metadata


@lru_cache(maxsize=None)
def _specs(cls: type) -> Tuple[FieldSpec, ...]:
    out = []

    def walk(c: type, prefix: str, top: str, top_title: str) -> None:
        for f in dataclasses.fields(c):
            path = prefix + f.name
            if _is_section(f):
                title = f.metadata[_SECTION][0]
                # Nested tables stay in their top-level group for the form.
                if prefix:
                    walk(f.type, path + ".", top, top_title)
                else:
                    walk(f.type, path + ".", f.name, title)
                continue
            rule: _Rule = f.metadata[_RULE]
            out.append(
                FieldSpec(
                    path=path,
                    name=f.name,
                    type=_kind(f.type),
                    default=f.default,
                    section=top,
                    section_title=top_title,
                    **vars(rule),
                )
            )

    walk(cls, "", "", "General" if cls is Config else "")
    return tuple(out)


def iter_fields(cls: type = Config) -> list:
    """Every leaf field of ``cls`` in declaration order, as :class:`FieldSpec`."""
    return list(_specs(cls))


def iter_sections(cls: type = Config) -> list:
    """Every table of ``cls`` (nested ones too) as :class:`SectionSpec`."""
    out = []

    def walk(c: type, prefix: str) -> None:
        for f in dataclasses.fields(c):
            if _is_section(f):
                title, help_text = f.metadata[_SECTION]
                out.append(SectionSpec(prefix + f.name, title, help_text))
                walk(f.type, prefix + f.name + ".")

    walk(cls, "")
    return out


def _spec_index() -> dict:
    return {s.path: s for s in _specs(Config)}


# --------------------------------------------------------------------------
# Value formatting, type coercion, range checks
# --------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    """A value as it would look in TOML, kept short and on one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _quote(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_fmt(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {_fmt(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


_EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
}


class _Bad(Exception):
    """Internal: a value problem before the key and source are known."""


def _coerce(kind: type, value: Any) -> Any:
    ok = False
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        # bool is an int subclass; `iters = true` is a typo, not 1.
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        ok = isinstance(value, str)
    elif kind is list:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    if ok:
        return value
    raise _Bad(f"expected {_EXPECTED[kind]}, got {_describe(value)}")


def _range_problem(spec: FieldSpec, value: Any) -> Optional[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            return "must be a single line"
        if spec.nonempty and not value.strip():
            return "must not be empty"
    if spec.type is list:
        if any(not v.strip() for v in value):
            return "must not contain empty names"
    if any(value == v for v, _ in spec.special):
        return None
    extra = "".join(f" (or {_fmt(v)}: {label})" for v, label in spec.special)
    if spec.choices is not None and value not in spec.choices:
        return "must be one of " + ", ".join(_fmt(c) for c in spec.choices)
    if spec.min is not None:
        if spec.min_exclusive and not value > spec.min:
            return f"must be > {spec.min:g}{extra}"
        if not spec.min_exclusive and not value >= spec.min:
            return f"must be >= {spec.min:g}{extra}"
    if spec.max is not None:
        if spec.max_exclusive and not value < spec.max:
            return f"must be < {spec.max:g}{extra}"
        if not spec.max_exclusive and not value <= spec.max:
            return f"must be <= {spec.max:g}{extra}"
    return None


# --------------------------------------------------------------------------
# Key lookup with did-you-mean hints
# --------------------------------------------------------------------------


def _hint(name: str, candidates: Sequence[str]) -> str:
    """A did-you-mean hint: a close name in the same table, else the same
    name in another table (``training.beta`` -> ``orpo.beta``)."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    elsewhere = [s.path for s in _specs(Config) if s.name == name]
    if elsewhere:
        return f" (did you mean '{elsewhere[0]}'?)"
    return ""


def _unknown(source: str, cls: type, prefix: str, name: str, is_table: bool) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    hint = _hint(name, names)
    path = prefix + name
    if is_table and not prefix:
        section_names = [f.name for f in dataclasses.fields(cls) if _is_section(f)]
        close = difflib.get_close_matches(name, section_names, n=1, cutoff=0.6)
        hint = f" (did you mean '[{close[0]}]'?)" if close else ""
        return ConfigError(source, f"unknown section '[{path}]'{hint}", key=path)
    return ConfigError(source, f"unknown key '{path}'{hint}", key=path)


def _resolve(path: str, source: str) -> Tuple[dataclasses.Field, str]:
    """Find the dataclass field for a dotted path; raise ConfigError if none."""
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ConfigError(source, f"invalid key '{path}'", key=path)
    cls: type = Config
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i]) + "." if i else ""
        match = next((f for f in dataclasses.fields(cls) if f.name == part), None)
        if match is None:
            more = i < len(parts) - 1
            raise _unknown(source, cls, prefix, part, is_table=more)
        if i < len(parts) - 1:
            if not _is_section(match):
                raise ConfigError(source, f"'{prefix + part}' is not a table", key=path)
            cls = match.type
    return match, path


def _leaf_spec(path: str, source: str) -> FieldSpec:
    f, _ = _resolve(path, source)
    if _is_section(f):
        keys = ", ".join(s.name for s in _specs(f.type))
        raise ConfigError(source, f"'{path}' is a table; set one of its keys: {keys}", key=path)
    return _spec_index()[path]


# --------------------------------------------------------------------------
# Dict <-> Config
# --------------------------------------------------------------------------


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    kwargs = {}
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        f = by_name.get(key)
        if f is None:
            raise _unknown(source, cls, prefix, key, is_table=isinstance(value, dict))
        path = prefix + key
        if _is_section(f):
            if not isinstance(value, dict):
                raise ConfigError(
                    source, f"{path} = {_fmt(value)}: expected a table [{path}], got {_describe(value)}", key=path
                )
            kwargs[key] = _build(f.type, value, path + ".", source)
        else:
            try:
                kwargs[key] = _coerce(_kind(f.type), value)
            except _Bad as exc:
                raise ConfigError(source, f"{path} = {_fmt(value)}: {exc}", key=path) from None
    return cls(**kwargs)


def config_from_dict(d: dict, source: str) -> Config:
    """Build and check a Config from a (possibly partial) nested dict."""
    if not isinstance(d, dict):
        raise ConfigError(source, f"expected a table at the top level, got {_describe(d)}")
    cfg = _build(Config, d, "", source)
    check(cfg, source)
    return cfg


def _to_plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def config_to_dict(cfg: Any, only_changed: bool = False) -> dict:
    """The config as nested plain dicts (tuples become lists), ready for TOML.

    With ``only_changed`` only values that differ from the defaults are kept,
    and tables left empty are dropped.
    """
    out: dict = {}
    defaults = type(cfg)()
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _is_section(f):
            sub = config_to_dict(value, only_changed)
            if sub or not only_changed:
                out[f.name] = sub
        elif not only_changed or value != getattr(defaults, f.name):
            out[f.name] = _to_plain(value)
    return out


def dump_toml(cfg: Config, path: Any, only_changed: bool = False) -> Path:
    """Write ``cfg`` as TOML atomically and return the path.

    Does not validate: the caller decides whether an invalid config may be
    saved (it will then fail to load with a clear message).
    """
    from trainer.pure.runs import atomic_write_text  # deferred: runs may one day import config

    path = Path(path)
    atomic_write_text(path, tomli_w.dumps(config_to_dict(cfg, only_changed)))
    return path


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def load_preset(path: Any) -> Config:
    """Read, parse and check a preset file."""
    return parse_preset_text(read_preset_text(path), str(path))[1]


def read_preset_text(path: Any) -> str:
    """A preset file's text, with unreadable files reported as one-line ConfigErrors."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "no such preset file") from None
    except IsADirectoryError:
        raise ConfigError(source, "is a directory, not a preset file") from None
    except OSError as exc:
        raise ConfigError(source, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, f"not UTF-8 text (byte {exc.start})") from None
    return text


def parse_preset_text(text: str, source: str) -> Tuple[dict, Config]:
    """The raw TOML table and the checked config of a preset's text. Callers that rewrite
    a preset need both; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, _toml_error(exc)) from None
    return data, config_from_dict(data, source)


def _toml_error(exc: Exception) -> str:
    # tomllib puts the position at the end of its message; move it to the
    # front so the line reads like a compiler diagnostic.
    message = str(exc)
    m = _TOML_POSITION.search(message)
    if m:
        return f"line {m.group(1)}, column {m.group(2)}: invalid TOML: {message[: m.start()]}"
    return f"invalid TOML: {message}"


# --------------------------------------------------------------------------
# Single values: get, replace, parse, validate
# --------------------------------------------------------------------------


def get_value(cfg: Any, path: str) -> Any:
    """The value at a dotted path (a leaf, or a whole table)."""
    _resolve(path, "")
    value = cfg
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _replace_at(obj: Any, parts: Sequence[str], value: Any) -> Any:
    head = parts[0]
    if len(parts) > 1:
        value = _replace_at(getattr(obj, head), parts[1:], value)
    return dataclasses.replace(obj, **{head: value})


def replace_value(cfg: Config, path: str, value: Any) -> Config:
    """A copy of ``cfg`` with one value replaced.

    The value is type-checked and converted (int -> float, list -> tuple) but
    not range-checked, so the form can hold a value it then flags.
    """
    f, _ = _resolve(path, "")
    if _is_section(f):
        if not isinstance(value, f.type):
            raise ConfigError("", f"{path}: expected a {f.type.__name__}, got {_describe(value)}", key=path)
    else:
        try:
            value = _coerce(_kind(f.type), value)
        except _Bad as exc:
            raise ConfigError("", f"{path} = {_fmt(value)}: {exc}", key=path) from None
    return _replace_at(cfg, path.split("."), value)


def _parse_toml_value(text: str) -> Tuple[bool, Any]:
    try:
        doc = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return False, None
    # "1\nother = 2" parses too; only a lone value counts.
    if list(doc) != ["v"]:
        return False, None
    return True, doc["v"]


def parse_value(path: str, text: str, source: str = "--set") -> Any:
    """Turn the text of ``--set key=TEXT`` (or a form input) into a typed value.

    The text is read as a TOML value (``1e-4``, ``true``, ``["a", "b"]``).
    String fields also take bare text (``mlx-community/Foo``), and list fields
    take bare comma-separated names (``self_attn.q_proj,self_attn.v_proj``).
    Types are checked; ranges are not (see :func:`validate_field`).
    """
    spec = _leaf_spec(path, source)
    stripped = text.strip()
    ok, value = _parse_toml_value(stripped)
    if spec.type is str and not (ok and isinstance(value, str)):
        # `output.name=2024` means the string "2024", not an error.
        ok, value = True, stripped
    elif spec.type is list and not ok:
        ok, value = True, [p.strip() for p in stripped.split(",") if p.strip()]
    if not ok:
        raise ConfigError(
            source, f"{path} = {_fmt(stripped)}: expected {_EXPECTED[spec.type]}", key=path
        )
    try:
        return _coerce(spec.type, value)
    except _Bad as exc:
        raise ConfigError(source, f"{path} = {_fmt(value)}: {exc}", key=path) from None


def validate_field(path: str, value: Any) -> Optional[str]:
    """The problem with one value for one field (type, range, choices), or None."""
    try:
        spec = _leaf_spec(path, "")
    except ConfigError as exc:
        return exc.problem
    try:
        value = _coerce(spec.type, value)
    except _Bad as exc:
        return str(exc)
    return _range_problem(spec, value)


def apply_overrides(cfg: Config, overrides: Iterable[str], source: str = "--set") -> Config:
    """Apply ``key=value`` overrides (the CLI's ``--set``) and check the result."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(source, f"expected KEY=VALUE, got {_fmt(item)}")
        value = parse_value(key, text, source)
        problem = _range_problem(_spec_index()[key], value)
        if problem:
            raise ConfigError(source, f"{key} = {_fmt(value)}: {problem}", key=key)
        cfg = replace_value(cfg, key, value)
    check(cfg, source)
    return cfg


# --------------------------------------------------------------------------
# Whole-config validation
# --------------------------------------------------------------------------


def _problems(cfg: Config) -> list:
    """Every field-level and cross-field :class:`Problem`."""
    found = []
    typed_ok = True
    for spec in _specs(Config):
        value = get_value(cfg, spec.path)
        try:
            value = _coerce(spec.type, value)
        except _Bad as exc:
            found.append(Problem(spec.path, value, str(exc)))
            typed_ok = False
            continue
        problem = _range_problem(spec, value)
        if problem:
            found.append(Problem(spec.path, value, problem))
    if typed_ok:
        found.extend(_cross_field(cfg))
    return found


def _cross_field(cfg: Config) -> list:
    t, found = cfg.training, []
    if t.warmup_steps > 0 and t.warmup_steps >= t.iters:
        found.append(
            Problem("training.warmup_steps", t.warmup_steps, f"must be less than training.iters ({t.iters})")
        )
    # A disabled QAT block should not block a run over a field it ignores.
    if cfg.qat.enable and cfg.qat.start_step >= t.iters:
        found.append(Problem("qat.start_step", cfg.qat.start_step, f"must be less than training.iters ({t.iters})"))
    if cfg.finetune.type == "full" and cfg.model.quantize.bits != 0:
        found.append(
            Problem(
                "finetune.type",
                cfg.finetune.type,
                f"full fine-tuning cannot train a quantized base (model.quantize.bits = {cfg.model.quantize.bits})",
            )
        )
    if t.min_learning_rate > t.learning_rate:
        found.append(
            Problem(
                "training.min_learning_rate",
                t.min_learning_rate,
                f"must be <= training.learning_rate ({t.learning_rate:g})",
            )
        )
    return found


def validate(cfg: Config) -> list:
    """Every :class:`Problem` in ``cfg``, field by field, then the cross-field rules."""
    return _problems(cfg)


def check(cfg: Config, source: str) -> None:
    """Raise the first problem in ``cfg`` as a ConfigError naming ``source``."""
    found = _problems(cfg)
    if found:
        first = found[0]
        raise ConfigError(source, f"{first.key} = {_fmt(first.value)}: {first.message}", key=first.key)
