"""Configs in and out of TOML: preset files, plain dicts, and lone TOML values.

Loading is strict on purpose: an unknown key or a value of the wrong type is an error,
because a silently ignored typo in a preset wastes a whole training run. Every error is a
``ConfigError`` whose text is one line naming the file and the dotted key.
"""

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on Python 3.10
    import tomli as tomllib

import tomli_w

from trainer.pure.config_checks import check
from trainer.pure.config_fields import field_kind, is_section
from trainer.pure.config_keys import unknown_key
from trainer.pure.config_problems import ConfigError
from trainer.pure.config_schema import Config
from trainer.pure.config_values import BadValue, coerce, describe, fmt
from trainer.pure.runs import atomic_write_text

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    kwargs = {}
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        f = by_name.get(key)
        if f is None:
            raise unknown_key(source, cls, prefix, key, is_table=isinstance(value, dict))
        path = prefix + key
        if is_section(f):
            if not isinstance(value, dict):
                raise ConfigError(
                    source, f"{path} = {fmt(value)}: expected a table [{path}], got {describe(value)}", key=path
                )
            kwargs[key] = _build(f.type, value, path + ".", source)
        else:
            try:
                kwargs[key] = coerce(field_kind(f.type), value)
            except BadValue as exc:
                raise ConfigError(source, f"{path} = {fmt(value)}: {exc}", key=path) from None
    return cls(**kwargs)


def config_from_dict(d: dict, source: str) -> Config:
    """Build and check a Config from a (possibly partial) nested dict."""
    if not isinstance(d, dict):
        raise ConfigError(source, f"expected a table at the top level, got {describe(d)}")
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
        if is_section(f):
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
    path = Path(path)
    atomic_write_text(path, tomli_w.dumps(config_to_dict(cfg, only_changed)))
    return path


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


def parse_preset_text(text: str, source: str) -> tuple[dict, Config]:
    """The raw TOML table and the checked config of a preset's text. Callers that rewrite
    a preset need both; `source` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, _toml_error(exc)) from None
    except RecursionError:  # tomllib recurses per nesting level; no preset nests that deep
        raise ConfigError(source, "invalid TOML: values nested too deeply") from None
    return data, config_from_dict(data, source)


def _toml_error(exc: Exception) -> str:
    # tomllib puts the position at the end of its message; move it to the
    # front so the line reads like a compiler diagnostic.
    message = str(exc)
    m = _TOML_POSITION.search(message)
    if m:
        return f"line {m.group(1)}, column {m.group(2)}: invalid TOML: {message[: m.start()]}"
    return f"invalid TOML: {message}"


def parse_toml_value(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` is one TOML value, else ``(False, None)``."""
    try:
        doc = tomllib.loads(f"v = {text}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return False, None
    # "1\nother = 2" parses too; only a lone value counts.
    if list(doc) != ["v"]:
        return False, None
    return True, doc["v"]
