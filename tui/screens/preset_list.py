"""The first screen: every preset with its model, data, fine-tune type, beta and
description, filtered as you type. Broken files are listed with their error."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Header, Input, Static

from trainer.pure.runs import TRASH_DIR, move_to_trash
from tui import presets_store as store
from tui.messages import RunStartRequested
from tui.screens.base import OrpoScreen
from tui.widgets.ask_name import AskName
from tui.widgets.confirm import Confirm
from tui.widgets.fit_footer import FitFooter
from tui.widgets.fit_table import FitTable
from tui.widgets.show_command import ShowCommand
from tui.widgets.sweep_dialog import SweepDialog
from tui.workspace import Workspace

COLUMNS = (("name", "Preset"), ("model", "Model"), ("data", "Data"), ("type", "Type"), ("beta", "β"), ("description", "Description"))


class PresetListScreen(OrpoScreen):
    CSS_PATH = "preset_list.tcss"
    BINDINGS = [
        Binding("enter", "open", "Open", id="presets.open", show=False, tooltip="Edit the highlighted preset"),
        Binding("s", "start", "Start run", id="presets.start", tooltip="Train the highlighted preset in the background"),
        Binding("slash", "focus_filter", "Filter", id="presets.filter", show=False, tooltip="Type to filter presets"),
        Binding("w", "sweep", "Sweep", id="presets.sweep", tooltip="Queue a grid of runs over one or two fields"),
        Binding("n", "new", "New", id="presets.new", tooltip="Create a preset with the demo defaults"),
        Binding("c", "clone", "Clone", id="presets.clone", show=False, tooltip="Copy the highlighted preset"),
        Binding("r", "rename", "Rename", id="presets.rename", show=False, tooltip="Rename the highlighted preset file"),
        Binding("d", "delete", "Delete", id="presets.delete", show=False, tooltip="Move the preset to the trash folder"),
        Binding("t", "open_text", "As text", id="presets.text", show=False, tooltip="Open the preset file as TOML text"),
        Binding("x", "show_command", "Command", id="presets.command", show=False, tooltip="Show the orpo-train command"),
        Binding("f5", "reload", "Reload", id="presets.reload", show=False, tooltip="Re-read the presets folder"),
    ]

    def __init__(self, workspace: Workspace) -> None:
        super().__init__()
        self.workspace = workspace
        self.entries: list[store.PresetEntry] = []
        self._filled_once = False
        self._left = False  # suspended since it was last shown

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="body"):
            yield Input(placeholder="Type to filter · ↑↓ choose · enter opens · tab to the list for actions", id="filter")
            yield FitTable(id="presets", cursor_type="row", zebra_stripes=True, elastic=("name", "description"))
            yield Static(id="detail")
        yield FitFooter()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        self.query_one("#filter", Input).focus()

    def on_screen_resume(self) -> None:
        # Coming back from the editor or another mode: files may have changed. The resume
        # that comes with the first show finds the table just filled by on_mount.
        if self._filled_once:
            self.reload()
        self._filled_once = True
        if self._left:
            # Back on the list (F2, or from the editor): the keys the footer shows act on
            # the list, so `n` makes a preset instead of typing into the filter.
            self._left = False
            table = self.query_one(DataTable)
            if table.row_count:
                table.focus()

    def on_screen_suspend(self) -> None:
        self._left = True

    # ------------------------------------------------------------------ data

    @property
    def presets_dir(self) -> Path:
        return self.workspace.presets_dir

    def reload(self, select: Path | None = None) -> None:
        current = select or (self.highlighted.path if self.highlighted else None)
        self.entries = store.scan_presets(self.presets_dir)
        self.refill(current)

    def visible(self) -> list[store.PresetEntry]:
        query = self.query_one("#filter", Input).value
        return [e for e in self.entries if e.matches(query)]

    def refill(self, select: Path | None = None) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for entry in self.visible():
            s = entry.summary()
            name = f"⚠ {entry.name}" if entry.error else entry.name
            table.add_row(name, s["model"], s["data"], s["type"], s["beta"], s["description"], key=str(entry.path))
        if select is not None and str(select) in table.rows:
            table.move_cursor(row=table.get_row_index(str(select)))
        self.show_detail()
        if not self.entries:
            self.query_one("#detail", Static).update(f"No presets in {self.presets_dir}. Press n to create one.")

    @property
    def highlighted(self) -> store.PresetEntry | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return next((e for e in self.entries if str(e.path) == key), None)

    def show_detail(self) -> None:
        entry = self.highlighted
        detail = self.query_one("#detail", Static)
        if entry is None:
            detail.update("No preset matches the filter." if self.entries else "")
        elif entry.error:
            # Text, not markup: error messages quote TOML such as "[training]".
            detail.update(Text.assemble((entry.path.name, "bold"), " does not load: ", (entry.problem, "red"),
                                        "  ·  t: open as text to fix it"))
        else:
            detail.update(Text.assemble((str(entry.path), "bold"), "\n", self.train_command(entry)))

    # ------------------------------------------------------------------ events

    @on(Input.Changed, "#filter")
    def filter_changed(self) -> None:
        self.refill()

    @on(DataTable.RowHighlighted)
    def row_highlighted(self) -> None:
        self.show_detail()

    @on(DataTable.RowSelected)
    def row_selected(self) -> None:
        self.action_open()

    def on_key(self, event) -> None:
        """fzf-style: typing filters, arrows move through the matches, enter opens one. On the
        table itself letters are actions, and any other printable key starts a filter."""
        filt = self.query_one("#filter", Input)
        table = self.query_one(DataTable)
        if self.focused is filt:
            if event.key in ("down", "up"):
                table.action_cursor_down() if event.key == "down" else table.action_cursor_up()
                event.stop()
            elif event.key == "enter":
                # Keys typed in one burst arrive before the filter's Changed message: filter
                # now, so enter opens what the user sees matching, not a stale highlight.
                self.refill()
                self.action_open()
                event.stop()
            elif event.key == "escape" and filt.value:
                filt.value = ""
                event.stop()
            return
        if event.is_printable and event.character and event.key not in self._bound_keys():
            filt.focus()
            filt.insert_text_at_cursor(event.character)
            event.stop()

    def _bound_keys(self) -> set[str]:
        return {b.key for b in self.BINDINGS} | {"question_mark"}

    # ------------------------------------------------------------------ actions

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_reload(self) -> None:
        self.reload()
        self.notify(f"{len(self.entries)} presets in {self.presets_dir}")

    def action_open(self) -> None:
        entry = self.highlighted
        if entry is None:
            return
        if entry.error:
            self.action_open_text()
            return
        from tui.screens.preset_editor import PresetEditorScreen

        self.app.push_screen(PresetEditorScreen(self.workspace, entry))

    def action_open_text(self) -> None:
        entry = self.highlighted
        if entry is not None:
            from tui.screens.text_editor import TextEditorScreen

            try:
                screen = TextEditorScreen(entry.path)
            except OSError as exc:
                self.notify(f"Cannot open {entry.path.name} as text: {exc.strerror or exc}", severity="error")
                return
            self.app.push_screen(screen)

    def action_start(self) -> None:
        entry = self.highlighted
        if entry is None:
            return
        if entry.error:
            self.notify(f"{entry.path.name} does not load: {entry.error}", severity="error")
            return
        self.post_message(RunStartRequested(entry.path))

    def action_sweep(self) -> None:
        entry = self.highlighted
        if entry is None or entry.error:
            self.notify("Choose a preset that loads to sweep over.", severity="warning")
            return
        self.app.push_screen(SweepDialog(entry.path, self.workspace.runs_dir), self.swept)

    def swept(self, queued: int | None) -> None:
        if queued:
            self.notify(f"Queued {queued} runs; the queue runner trains them one after another")
            self.app.switch_mode("queue")

    def action_show_command(self) -> None:
        entry = self.highlighted
        if entry is not None:
            self.app.push_screen(ShowCommand(f"Train {entry.name}", self.train_command(entry)))

    def train_command(self, entry: store.PresetEntry) -> str:
        """What the detail line and the command dialog both show: the command that trains
        the preset into the runs folder this app watches."""
        return store.train_command(entry.path, self.workspace.runs_dir)

    def _ask_then(self, title: str, value: str, do) -> None:
        def done(name: str | None) -> None:
            if not name:
                return
            try:
                path = do(name)
            except store.PresetFileError as exc:
                self.notify(str(exc), severity="error", timeout=10)
                self.app.push_screen(AskName(title, name), done)  # the typed name stays
                return
            self.reload(select=path)

        self.app.push_screen(AskName(title, value), done)

    def action_new(self) -> None:
        self._ask_then("New preset (demo defaults)", "", lambda name: store.create(self.presets_dir, name))

    def action_clone(self) -> None:
        entry = self.highlighted
        if entry is not None:
            self._ask_then(f"Clone {entry.name} as", f"{entry.name}-copy", lambda name: store.clone(entry, name))

    def action_rename(self) -> None:
        entry = self.highlighted
        if entry is not None:
            self._ask_then(f"Rename {entry.name} to", entry.name, lambda name: store.rename(entry, name))

    def action_delete(self) -> None:
        entry = self.highlighted
        if entry is None:
            return

        def done(choice: str) -> None:
            if choice != "delete":
                return
            try:
                target = move_to_trash(entry.path)
            except OSError as exc:
                self.notify(f"Not deleted: {exc.filename or entry.path}: {exc.strerror or exc}", severity="error", timeout=10)
                return
            self.notify(f"Moved to {target.parent.name}/{target.name}")
            self.reload()

        self.app.push_screen(
            Confirm(f"Delete {entry.path.name}?", f"It is moved to {self.presets_dir / TRASH_DIR}/, not erased.",
                    [("cancel", "Cancel", "default"), ("delete", "Delete", "error")]),
            done,
        )

    def commands(self):
        for title, help_text, action in (
            ("Start run", "Train the highlighted preset in the background", self.action_start),
            ("Sweep", "Queue a grid of runs over one or two fields of the highlighted preset", self.action_sweep),
            ("New preset", "Create a preset with the demo defaults", self.action_new),
            ("Clone preset", "Copy the highlighted preset", self.action_clone),
            ("Rename preset", "Rename the highlighted preset", self.action_rename),
            ("Delete preset", "Move the highlighted preset to the trash", self.action_delete),
            ("Show train command", "The orpo-train command for the highlighted preset", self.action_show_command),
            ("Reload presets", "Re-read the presets folder", self.action_reload),
        ):
            yield SystemCommand(title, help_text, action)
