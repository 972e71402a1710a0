"""``--set key=value`` overrides and the form's text inputs: text to a typed value, then
applied to a config and checked."""

from collections.abc import Iterable
from typing import Any

from trainer.pure.config_checks import check
from trainer.pure.config_keys import leaf_spec, replace_value
from trainer.pure.config_problems import ConfigError
from trainer.pure.config_schema import Config
from trainer.pure.config_toml import parse_toml_value
from trainer.pure.config_values import EXPECTED, BadValue, coerce, fmt, range_problem


def parse_value(path: str, text: str, source: str = "--set") -> Any:
    """Turn the text of ``--set key=TEXT`` (or a form input) into a typed value.

    The text is read as a TOML value (``1e-4``, ``true``, ``["a", "b"]``).
    String fields also take bare text (``mlx-community/Foo``), and list fields
    take bare comma-separated names (``self_attn.q_proj,self_attn.v_proj``).
    Types are checked; ranges are not (see ``validate_field``).
    """
    spec = leaf_spec(path, source)
    stripped = text.strip()
    ok, value = parse_toml_value(stripped)
    if spec.type is str and not (ok and isinstance(value, str)):
        # `output.name=2024` means the string "2024", not an error.
        ok, value = True, stripped
    elif spec.type is list and not ok:
        ok, value = True, [p.strip() for p in stripped.split(",") if p.strip()]
    if not ok:
        raise ConfigError(source, f"{path} = {fmt(stripped)}: expected {EXPECTED[spec.type]}", key=path)
    try:
        return coerce(spec.type, value)
    except BadValue as exc:
        raise ConfigError(source, f"{path} = {fmt(value)}: {exc}", key=path) from None


def apply_overrides(cfg: Config, overrides: Iterable[str], source: str = "--set") -> Config:
    """Apply ``key=value`` overrides (the CLI's ``--set``) and check the result."""
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(source, f"expected KEY=VALUE, got {fmt(item)}")
        value = parse_value(key, text, source)
        problem = range_problem(leaf_spec(key, source), value)
        if problem:
            raise ConfigError(source, f"{key} = {fmt(value)}: {problem}", key=key)
        cfg = replace_value(cfg, key, value)
    check(cfg, source)
    return cfg
