"""The base of the screens that edit a file: the preset form, a preset as text, a run's
notes. They share one guard: going back and quitting both ask before unsaved changes go."""

from __future__ import annotations

from collections.abc import Callable

from textual.binding import Binding
from textual.widgets import TextArea

from tui.screens.base import OrpoScreen
from tui.widgets.leave_prompt import DISCARD, SAVE, LeavePrompt

BACK_TOOLTIP = "Back (asks about unsaved changes)"


def save_binding(scope: str, tooltip: str) -> Binding:
    # Priority: saving must not depend on which widget has the focus.
    return Binding("ctrl+s", "save", "Save", id=f"{scope}.save", tooltip=tooltip, priority=True)


def back_binding(scope: str, tooltip: str = BACK_TOOLTIP, *, priority: bool = True) -> Binding:
    """Escape goes back through `EditorScreen.leave`. Priority, because a TextArea that
    indents on tab takes escape to move the focus; the form goes without, so that escape
    closes an open Select's menu before it leaves the form."""
    return Binding("escape", "back", "Back", id=f"{scope}.back", tooltip=tooltip, priority=priority)


class EditorScreen(OrpoScreen):
    """Subclasses say what is edited (`document_name`, shown in the question), whether it
    changed (`dirty`) and how to save it (`action_save`, False when it refused)."""

    @property
    def document_name(self) -> str:
        raise NotImplementedError

    @property
    def dirty(self) -> bool:
        raise NotImplementedError

    def action_save(self) -> bool:
        raise NotImplementedError

    def action_back(self) -> None:
        self.leave(then=self.app.pop_screen)

    def leave(self, then: Callable[[], object]) -> None:
        """`then` runs unless the user keeps editing, or chose Save and the save was refused
        (a form with errors): what is on screen is never dropped without a yes."""
        if not self.dirty:
            then()
            return

        def answered(choice: str | None) -> None:
            if choice == DISCARD or (choice == SAVE and self.action_save()):
                then()

        self.app.push_screen(LeavePrompt(self.document_name), answered)


class TextDocumentScreen(EditorScreen):
    """An editor of one TextArea: it has changes when the text differs from what was last
    loaded or saved. Subclasses compose the TextArea and write the text (`save_text`)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.original = text

    @property
    def text(self) -> str:
        return self.query_one(TextArea).text

    @property
    def dirty(self) -> bool:
        return self.text != self.original

    def save_text(self, text: str) -> None:
        raise NotImplementedError

    def action_save(self) -> bool:
        """Save; a write that fails (a read-only folder, a full disk) is one line, and the
        text stays on screen, still unsaved."""
        text = self.text
        try:
            self.save_text(text)
        except OSError as exc:
            self.notify(f"Not saved: {exc.filename or self.document_name}: {exc.strerror or exc}; your text is kept",
                        severity="error", timeout=10)
            return False
        self.original = text
        return True
