"""The question an editor asks before its unsaved changes could be lost."""

from __future__ import annotations

from tui.widgets.confirm import CANCEL, Confirm

DISCARD = "discard"
SAVE = "save"


class LeavePrompt(Confirm):
    """Keep editing (also on escape), discard the changes, or save them; dismisses with
    CANCEL, DISCARD or SAVE. Save has the focus: enter never drops work."""

    def __init__(self, document: str) -> None:
        super().__init__("Unsaved changes", f"{document} has changes that are not saved.",
                         [(CANCEL, "Keep editing", "default"), (DISCARD, "Discard", "error"), (SAVE, "Save", "primary")])
