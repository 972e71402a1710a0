"""Validation: every problem of a config for the form (:func:`validate`), the first as a
one-line error for the CLI (:func:`check`), and one value on its own (:func:`validate_field`)."""

from typing import Any

from trainer.pure.config_keys import get_value, iter_fields, leaf_spec
from trainer.pure.config_problems import ConfigError, Problem
from trainer.pure.config_schema import Config, cross_field_problems
from trainer.pure.config_values import BadValue, coerce, fmt, range_problem


def validate(cfg: Config) -> list:
    """Every :class:`Problem` in ``cfg``, field by field, then the cross-field rules."""
    found = []
    typed_ok = True
    for spec in iter_fields():
        value = get_value(cfg, spec.path)
        try:
            value = coerce(spec.type, value)
        except BadValue as exc:
            found.append(Problem(spec.path, value, str(exc)))
            typed_ok = False
            continue
        problem = range_problem(spec, value)
        if problem:
            found.append(Problem(spec.path, value, problem))
    # The cross-field rules compare values and would raise on a value of the wrong type.
    if typed_ok:
        found.extend(cross_field_problems(cfg))
    return found


def check(cfg: Config, source: str) -> None:
    """Raise the first problem in ``cfg`` as a ConfigError naming ``source``."""
    found = validate(cfg)
    if found:
        first = found[0]
        raise ConfigError(source, f"{first.key} = {fmt(first.value)}: {first.message}", key=first.key)


def validate_field(path: str, value: Any) -> str | None:
    """The problem with one value for one field (type, range, choices), or None."""
    try:
        spec = leaf_spec(path, "")
    except ConfigError as exc:
        return exc.problem
    try:
        value = coerce(spec.type, value)
    except BadValue as exc:
        return str(exc)
    return range_problem(spec, value)
