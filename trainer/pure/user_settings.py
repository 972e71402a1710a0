"""The user's settings file, `~/.config/orpo-tui/settings.toml` (under `$XDG_CONFIG_HOME`
when set), read by the app and by the trainer from this one place so both agree on where it
is and what its keys mean.

Keys (all optional):

- ``presets_dir``, ``runs_dir``: the app's folders (tui/settings.py).
- ``notify_terminal`` (default true): the app rings the terminal bell and sends a desktop
  notification through the terminal (OSC 9 and OSC 777) when a run it watches ends; false
  for none of it, or a list of the ones wanted out of :data:`TERMINAL_KINDS` (a terminal
  that shows both OSC 9 and OSC 777, such as WezTerm or Ghostty, would show two).
- ``notify_command`` (a list of strings, no shell): the trainer runs it when its run ends
  (completed, failed, stopped), and the queue runner when a trainer it started crashed;
  placeholders in :data:`PLACEHOLDERS` (trainer/pure/run_end.py fills them).

A file that cannot be read or parsed, or a key of the wrong type, never stops anything: the
readers get the defaults and one line saying what is wrong, to show or log.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SETTINGS_FILE",
    "NOTIFY_TERMINAL",
    "NOTIFY_COMMAND",
    "TERMINAL_KINDS",
    "user_settings_path",
    "read_user_settings",
    "NotifySettings",
    "notify_settings",
]

SETTINGS_FILE = "settings.toml"
NOTIFY_TERMINAL = "notify_terminal"
NOTIFY_COMMAND = "notify_command"
TERMINAL_KINDS = ("bell", "osc9", "osc777")


def user_settings_path() -> Path:
    # The XDG spec says a relative value is invalid and to be ignored.
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(base) if base and os.path.isabs(base) else Path.home() / ".config") / "orpo-tui" / SETTINGS_FILE


def read_user_settings(path: Path | None = None) -> tuple[dict, str | None]:
    """The settings table (empty when there is no file) and a problem line, or None."""
    path = path or user_settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, None
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"{path}: cannot be read: {getattr(exc, 'strerror', None) or exc}"
    try:
        return tomllib.loads(text), None
    except tomllib.TOMLDecodeError as exc:
        return {}, f"{path}: {exc}"


@dataclass(frozen=True)
class NotifySettings:
    terminal: tuple[str, ...] = TERMINAL_KINDS  # what the app writes to its terminal; empty: nothing
    command: tuple[str, ...] = ()  # empty: no command


def notify_settings(settings: dict, path: Path | None = None) -> tuple[NotifySettings, list[str]]:
    """The notification keys of a settings table, and a line for each key that is wrong
    (that key then keeps its default)."""
    where = path or user_settings_path()
    problems = []
    terminal = settings.get(NOTIFY_TERMINAL, True)
    if isinstance(terminal, bool):
        terminal = TERMINAL_KINDS if terminal else ()
    elif isinstance(terminal, list) and all(kind in TERMINAL_KINDS for kind in terminal):
        terminal = tuple(kind for kind in TERMINAL_KINDS if kind in terminal)
    else:
        problems.append(f"{where}: {NOTIFY_TERMINAL} must be true, false or a list of "
                        f"{', '.join(map(repr, TERMINAL_KINDS))}, not {terminal!r}")
        terminal = TERMINAL_KINDS
    command = settings.get(NOTIFY_COMMAND, [])
    if not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
        problems.append(f'{where}: {NOTIFY_COMMAND} must be a list of strings, e.g. ["ntfy", "publish", "my-topic"]')
        command = []
    elif command and not command[0].strip():
        problems.append(f"{where}: {NOTIFY_COMMAND} starts with an empty program name")
        command = []
    return NotifySettings(terminal, tuple(command)), problems
