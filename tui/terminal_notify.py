"""The bytes that make a terminal ring and show a desktop notification, even over SSH.

- BEL rings the bell (tmux passes it on as a window bell by itself).
- OSC 9 (``ESC ] 9 ; text BEL``) is a notification in iTerm2, WezTerm, kitty, Ghostty and
  Windows Terminal.
- OSC 777 (``ESC ] 777 ; notify ; title ; body BEL``) is the same in rxvt-unicode, foot,
  WezTerm, Ghostty and VTE terminals that take it.

A terminal that knows neither ignores the whole sequence (it is a well-formed OSC). Inside
tmux, an OSC would be eaten by tmux itself, so each is wrapped in tmux's passthrough
(``ESC P tmux; <sequence, every ESC doubled> ESC \\``), which tmux hands to the outer
terminal when the user has ``set -g allow-passthrough on``.

Pure module: the app writes the result through its Textual driver.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["BEL", "osc9", "osc777", "tmux_passthrough", "notification"]

BEL = "\a"
ESC = "\x1b"
# C0 controls, DEL and C1 controls: any of them could end the sequence early (BEL, ESC \,
# the 8-bit ST) or start another; text from a run folder must not.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean(text: str) -> str:
    return _CONTROLS.sub(" ", text)


def osc9(text: str) -> str:
    return f"{ESC}]9;{_clean(text)}{BEL}"


def osc777(title: str, body: str) -> str:
    # The fields are separated by ";": one in the title would move the rest into the body.
    return f"{ESC}]777;notify;{_clean(title).replace(';', ',')};{_clean(body)}{BEL}"


def tmux_passthrough(sequence: str) -> str:
    return f"{ESC}Ptmux;{sequence.replace(ESC, ESC + ESC)}{ESC}\\"


def notification(title: str, body: str, in_tmux: bool, kinds: Sequence[str] = ("bell", "osc9", "osc777")) -> str:
    """The bell, then the notification both ways (of `kinds`, those wanted), wrapped for tmux
    when inside it. OSC 9 has one text field: it starts with the title, so that a text
    beginning with a number and ";" is never read as one of ConEmu's OSC 9 commands."""
    wrap = tmux_passthrough if in_tmux else (lambda s: s)
    parts = {"bell": BEL, "osc9": wrap(osc9(f"{title}: {body}")), "osc777": wrap(osc777(title, body))}
    return "".join(parts[kind] for kind in ("bell", "osc9", "osc777") if kind in kinds)
