"""The dotted keys of the config tree: listing them for the form, finding one (with a
did-you-mean hint when it does not exist), reading and replacing the value at one."""

import dataclasses
import difflib
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from trainer.pure.config_fields import FieldSpec, field_kind, field_specs, is_section, section_specs
from trainer.pure.config_problems import ConfigError
from trainer.pure.config_schema import ROOT_TITLE, Config
from trainer.pure.config_values import BadValue, coerce, describe, fmt


def iter_fields(cls: type = Config) -> list:
    """Every leaf field of ``cls`` in declaration order, as :class:`FieldSpec`."""
    return list(field_specs(cls, ROOT_TITLE if cls is Config else ""))


def iter_sections(cls: type = Config) -> list:
    """Every table of ``cls`` (nested ones too) as :class:`SectionSpec`."""
    return section_specs(cls)


@lru_cache(maxsize=1)
def _spec_index() -> dict:
    return {s.path: s for s in field_specs(Config, ROOT_TITLE)}


def spec_at(path: str) -> FieldSpec:
    """The spec of a leaf key already known to exist."""
    return _spec_index()[path]


def _hint(name: str, candidates: Sequence[str]) -> str:
    """A did-you-mean hint: a close name in the same table, else the same
    name in another table (``training.beta`` -> ``orpo.beta``)."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{close[0]}'?)"
    elsewhere = [p for p, s in _spec_index().items() if s.name == name]
    if elsewhere:
        return f" (did you mean '{elsewhere[0]}'?)"
    return ""


def unknown_key(source: str, cls: type, prefix: str, name: str, is_table: bool) -> ConfigError:
    """The error for ``prefix + name`` not being a key of the table ``cls``."""
    path = prefix + name
    if is_table and not prefix:
        section_names = [f.name for f in dataclasses.fields(cls) if is_section(f)]
        close = difflib.get_close_matches(name, section_names, n=1, cutoff=0.6)
        hint = f" (did you mean '[{close[0]}]'?)" if close else ""
        return ConfigError(source, f"unknown section '[{path}]'{hint}", key=path)
    hint = _hint(name, [f.name for f in dataclasses.fields(cls)])
    return ConfigError(source, f"unknown key '{path}'{hint}", key=path)


def _resolve(path: str, source: str) -> dataclasses.Field:
    """The dataclass field for a dotted path; ConfigError if there is none."""
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise ConfigError(source, f"invalid key '{path}'", key=path)
    cls: type = Config
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i]) + "." if i else ""
        match = next((f for f in dataclasses.fields(cls) if f.name == part), None)
        if match is None:
            more = i < len(parts) - 1
            raise unknown_key(source, cls, prefix, part, is_table=more)
        if i < len(parts) - 1:
            if not is_section(match):
                raise ConfigError(source, f"'{prefix + part}' is not a table", key=path)
            cls = match.type
    return match


def leaf_spec(path: str, source: str) -> FieldSpec:
    """The spec of a leaf key; ConfigError naming ``source`` for an unknown key or a table."""
    f = _resolve(path, source)
    if is_section(f):
        keys = ", ".join(s.name for s in field_specs(f.type, ""))
        raise ConfigError(source, f"'{path}' is a table; set one of its keys: {keys}", key=path)
    return spec_at(path)


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
    f = _resolve(path, "")
    if is_section(f):
        if not isinstance(value, f.type):
            raise ConfigError("", f"{path}: expected a {f.type.__name__}, got {describe(value)}", key=path)
    else:
        try:
            value = coerce(field_kind(f.type), value)
        except BadValue as exc:
            raise ConfigError("", f"{path} = {fmt(value)}: {exc}", key=path) from None
    return _replace_at(cfg, path.split("."), value)
