"""One value against one field's rule: type coercion, range checks, and how a value is
written in messages. Knows the rules (``FieldSpec``), not the schema."""

import math
from typing import Any

from trainer.pure.config_fields import FieldSpec

EXPECTED = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list of strings",
}


class BadValue(Exception):
    """A value problem before the key and source are known; callers add them."""


def fmt(value: Any) -> str:
    """A value as it would look in TOML, kept short and on one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = _quote(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(fmt(v) for v in value) + "]"
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{k} = {fmt(v)}" for k, v in value.items()) + "}"
    elif isinstance(value, float) and not math.isfinite(value):
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    else:
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    return f'"{escaped}"'


def describe(value: Any) -> str:
    """The kind of a value, for "expected X, got Y"."""
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


def coerce(kind: type, value: Any) -> Any:
    """``value`` as a value of ``kind`` (int -> float, list -> tuple), or BadValue."""
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
    raise BadValue(f"expected {EXPECTED[kind]}, got {describe(value)}")


def range_problem(spec: FieldSpec, value: Any) -> str | None:
    """What is wrong with a value of the right type for ``spec``, or None."""
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
    extra = "".join(f" (or {fmt(v)}: {label})" for v, label in spec.special)
    if spec.choices is not None and value not in spec.choices:
        return "must be one of " + ", ".join(fmt(c) for c in spec.choices)
    if spec.min is not None:
        if spec.min_exclusive and not value > spec.min:
            return f"must be > {_bound(spec.min)}{extra}"
        if not spec.min_exclusive and not value >= spec.min:
            return f"must be >= {_bound(spec.min)}{extra}"
    if spec.max is not None:
        if spec.max_exclusive and not value < spec.max:
            return f"must be < {_bound(spec.max)}{extra}"
        if not spec.max_exclusive and not value <= spec.max:
            return f"must be <= {_bound(spec.max)}{extra}"
    return None


def _bound(limit: Any) -> str:
    # `:g` would round a large integer bound (2**63 - 1 -> 9.22337e+18) into one the
    # value could seem to satisfy.
    return str(limit) if isinstance(limit, int) else f"{limit:g}"
