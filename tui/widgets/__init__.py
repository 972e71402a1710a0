"""Reusable widgets and dialogs, one per module; the screens that use them are in tui/screens/.

Each keeps its look in its own DEFAULT_CSS, as Textual's own widgets do, so that it looks
the same on whichever screen it is shown."""
