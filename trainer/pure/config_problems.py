"""What is wrong with a config, in the two shapes callers need: a :class:`Problem` per key for
the form, which shows every problem beside its field, and a :class:`ConfigError` for the CLI,
which stops at the first one and prints a single line naming where it came from."""

from dataclasses import dataclass
from typing import Any


class ConfigError(Exception):
    """A problem with a preset or an override, as one printable line.

    ``source`` is the file name or ``"--set"`` (empty when there is none),
    ``key`` the dotted key concerned (or None), ``problem`` the text after the
    source prefix.
    """

    def __init__(self, source: str, problem: str, key: str | None = None):
        self.source = source
        self.key = key
        self.problem = one_line(problem)
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


def one_line(text: str) -> str:
    # Callers print these on a terminal or next to a form field: a newline
    # inside would break the "one clear line" contract of the CLI.
    return " ".join(str(text).split())
