"""How a config field is declared, and how the declarations are read back.

A leaf is declared with :func:`opt`, a sub-table with :func:`section`; both keep their
rule (help, range, choices) in the dataclass field's metadata, so the schema is the single
source for validation, ``--set`` parsing and the form. This module knows nothing of the
schema itself: :func:`field_specs` and :func:`section_specs` walk any tree declared this way.
"""

import dataclasses
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

# Metadata keys; namespaced so they cannot clash with another library's field metadata.
_RULE = "orpo_tui.rule"
_SECTION = "orpo_tui.section"


@dataclass(frozen=True)
class Rule:
    """What a leaf field accepts, and the help shown for it."""

    help: str
    min: Any = None
    max: Any = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple | None = None
    special: tuple[tuple[Any, str], ...] = ()
    reserved: bool = False
    unit: str | None = None
    nonempty: bool = False


def opt(
    default: Any,
    help: str,
    *,
    min: Any = None,
    max: Any = None,
    min_exclusive: bool = False,
    max_exclusive: bool = False,
    choices: Iterable[Any] | None = None,
    special: dict | None = None,
    reserved: bool = False,
    unit: str | None = None,
    nonempty: bool = False,
) -> Any:
    """Declare a leaf field.

    ``special`` maps values that are valid outside the range to what they mean
    (``{-1: "all layers"}``); the form can show the label.  ``nonempty`` is for
    strings that must not be blank.
    """
    rule = Rule(
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


@dataclass(frozen=True, kw_only=True)
class FieldSpec(Rule):
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


def is_section(f: dataclasses.Field) -> bool:
    return _SECTION in f.metadata


def field_kind(annotation: Any) -> Any:
    """The value type of a field's annotation: a section's dataclass, bool, int, float, str,
    or list for a tuple of strings."""
    if dataclasses.is_dataclass(annotation):
        return annotation
    if typing.get_origin(annotation) is tuple:
        return list
    if annotation in (bool, int, float, str):
        return annotation
    raise TypeError(f"unsupported config field type {annotation!r}")


@cache
def field_specs(cls: type, root_title: str) -> tuple[FieldSpec, ...]:
    """Every leaf of the tree rooted at ``cls``, in declaration order; ``root_title`` names
    the group of the root's own leaves."""
    out = []

    def walk(c: type, prefix: str, top: str, top_title: str) -> None:
        for f in dataclasses.fields(c):
            path = prefix + f.name
            if is_section(f):
                # Nested tables stay in their top-level group for the form.
                if prefix:
                    walk(f.type, path + ".", top, top_title)
                else:
                    walk(f.type, path + ".", f.name, f.metadata[_SECTION][0])
                continue
            rule: Rule = f.metadata[_RULE]
            out.append(
                FieldSpec(
                    path=path,
                    name=f.name,
                    type=field_kind(f.type),
                    default=f.default,
                    section=top,
                    section_title=top_title,
                    **vars(rule),
                )
            )

    walk(cls, "", "", root_title)
    return tuple(out)


def section_specs(cls: type) -> list:
    """Every table of the tree rooted at ``cls`` (nested ones too), in declaration order."""
    out = []

    def walk(c: type, prefix: str) -> None:
        for f in dataclasses.fields(c):
            if is_section(f):
                title, help_text = f.metadata[_SECTION]
                out.append(SectionSpec(prefix + f.name, title, help_text))
                walk(f.type, prefix + f.name + ".")

    walk(cls, "")
    return out
