"""The frame every dialog of the app shares: a centred box over the dimmed screen."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import ModalScreen

ResultType = TypeVar("ResultType")


class Dialog(ModalScreen[ResultType]):
    """A modal screen whose content sits in a `Vertical(classes="dialog")`, with a
    `Label(classes="title")` first and its buttons in a container of class "buttons"."""

    DEFAULT_CSS = """
    Dialog {
        align: center middle;
    }

    Dialog .dialog {
        width: 72;
        max-width: 95%;
        height: auto;
        max-height: 90%;
        border: thick $primary;
        background: $surface;
        padding: 1 2;
    }

    Dialog .dialog .title {
        text-style: bold;
        margin-bottom: 1;
    }

    Dialog .dialog .buttons {
        height: auto;
        margin-top: 1;
        align-horizontal: right;
    }

    Dialog .dialog .buttons Button {
        margin-left: 1;
    }
    """
