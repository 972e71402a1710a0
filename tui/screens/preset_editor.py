"""Edit one preset: a form generated from the config metadata, validated as you type, with
derived values and an on-demand dataset check beside it."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Header, Input, Label, Select, Static, Switch

from trainer.pure.config import (
    Config,
    ConfigError,
    FieldSpec,
    dump_toml,
    get_value,
    iter_fields,
    parse_value,
    replace_value,
    validate,
    validate_field,
)
from tui import presets_store as store
from tui.derived import count_train_rows, derived_values, hub_warnings
from tui.messages import RunStartRequested
from tui.screens.editing import EditorScreen, back_binding, save_binding
from tui.widgets.ask_name import AskName
from tui.widgets.confirm import Confirm
from tui.widgets.field_row import FieldRow, path_of, widget_id
from tui.widgets.fit_footer import FitFooter
from tui.widgets.show_command import ShowCommand
from tui.workspace import Workspace

# The grouping of MLX-LoRA-Studio's shared form, which users of MLX fine-tuning know.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Preset", ("description",)),
    ("Model & Data", ("model.path", "data.")),
    ("Fine-tune + Quantization", ("finetune.", "model.quantize.")),
    ("ORPO", ("orpo.",)),
    ("QAT", ("qat.",)),
    ("Training", ("training.",)),
    ("Distributed", ("distributed.",)),
    ("Output", ("output.",)),
    ("Reporting", ("report.",)),
)
HIDDEN = {"model.resolved_path"}  # written by the trainer into a run, never by hand


def grouped_fields() -> list[tuple[str, list[FieldSpec]]]:
    fields = [f for f in iter_fields() if f.path not in HIDDEN]
    out = []
    for title, prefixes in GROUPS:
        members = [f for p in prefixes for f in fields if f.path == p or (p.endswith(".") and f.path.startswith(p))]
        out.append((title, members))
    return out


class PresetEditorScreen(EditorScreen):
    CSS_PATH = "preset_editor.tcss"
    # Below 110 columns the side panel moves under the form (see the -narrow rules).
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        save_binding("editor", "Save changed keys to the preset file"),
        Binding("ctrl+o", "save_as", "Save as", id="editor.save_as", show=False, tooltip="Save to a new preset file", priority=True),
        Binding("ctrl+r", "start", "Start run", id="editor.start", tooltip="Train this preset (saves first)", priority=True),
        Binding("ctrl+b", "preflight", "Check data", id="editor.preflight", show=False,
                tooltip="Load the dataset and report on it", priority=True),
        Binding("ctrl+t", "show_command", "Command", id="editor.command", show=False, tooltip="Show the orpo-train command", priority=True),
        # ctrl+f from anywhere; `/` where it is not typed into a field (a switch, a select).
        Binding("ctrl+f", "find_field", "Find", id="editor.find", show=False,
                tooltip="Show only the fields whose name or help matches", priority=True),
        Binding("slash", "find_field", "Find field", id="editor.find_slash", show=False),
        back_binding("editor", "Back to the preset list (asks about unsaved changes)", priority=False),
    ]

    # The form's first input takes the focus on mount. Auto-focus would give it to the form's
    # scroll container first, and every move of the focus into or out of that container
    # restyles the whole form.
    AUTO_FOCUS = None

    def __init__(self, workspace: Workspace, entry: store.PresetEntry) -> None:
        super().__init__()
        assert entry.config is not None
        self.workspace = workspace
        self.entry = entry
        self.saved: Config = entry.config
        self.working: Config = entry.config
        self.field_errors: dict[str, str] = {}  # text that does not parse or is out of range
        self.cross_errors: dict[str, str] = {}
        self.train_rows: int | None = count_train_rows(entry.config)
        # The data settings `train_rows` was counted for; another data.* value means the count
        # is stale: it is dropped at once and counted again off the UI thread.
        self.rows_for = entry.config.data
        self.counting_rows = False
        self.resumed_before = False
        # (config, peak GB at the data's real lengths) from the last data check.
        self.checked_memory: tuple[Config, float] | None = None
        self.mounting = asyncio.Lock()  # the rest of the form arrives in parts; a find needs it all

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="Find a field by name or help · enter goes to the first · esc shows all", id="find", compact=True)
        with Horizontal(id="main"):
            with VerticalScroll(id="form", can_focus=False):
                yield from self.build(self.form_items()[: self.first_paint_items()])
            with VerticalScroll(id="side", can_focus=False):
                yield Label("Derived", classes="side-title")
                yield Static(id="derived", markup=False)
                yield Label("Problems", classes="side-title")
                yield Static(id="problems", markup=False)
                yield Label("Data check (ctrl+b)", classes="side-title")
                yield Static("Not run yet.", id="preflight", markup=False)
        yield FitFooter()

    def form_items(self) -> list[str | FieldSpec]:
        """The form from top to bottom: group titles (str) and fields."""
        return [item for title, specs in grouped_fields() for item in (title, *specs)]

    def first_paint_items(self) -> int:
        """How many form items fill the first view; the rest is mounted after the first
        paint. Every widget the screen opens with is styled several times on the way to that
        paint (mount, screen resume, focus), so the form opens with just what is seen."""
        narrow = self.has_class("-narrow")
        lines = self.app.size.height - 2 - (9 if narrow else 0)  # header, footer, side panel below
        # Two lines an item (a title with its margin, a row with its note), one more to
        # overflow, so the scrollbar shows the form goes on.
        return min(len(self.form_items()), max(lines, 0) // 2 + 1)

    def build(self, items: list[str | FieldSpec]) -> list:
        return [Label(item, classes="group") if isinstance(item, str) else FieldRow(item, get_value(self.working, item.path))
                for item in items]

    def on_mount(self) -> None:
        self.refresh_state()
        # Once laid out: an input focused before it has a width cannot scroll its cursor
        # (at the end of the text) into view.
        self.call_after_refresh(self.query("#form Input").first().focus)
        self.mount_rest_after_footer()

    def mount_rest_after_footer(self, tries: int = 10) -> None:
        """The footer composes its keys once it has mounted, which can be after the screen's
        on_mount: they belong in the first paint, not behind the rest of the form."""
        if self.query_one(FitFooter).children or not tries:
            self.call_after_refresh(self.mount_more)
        else:
            self.set_timer(0.02, lambda: self.mount_rest_after_footer(tries - 1))

    async def mount_more(self) -> None:
        """The rest of the form, a few rows per refresh: keys typed meanwhile wait for one
        small mount, not for the whole form's."""
        if not self.is_attached:
            return  # left before the form was complete
        if await self.mount_upto(len(self.query_one("#form").children) + 8):
            self.call_after_refresh(self.mount_more)

    async def mount_upto(self, count: int) -> bool:
        """Mount the form's items up to `count`; whether any are still to come."""
        async with self.mounting:
            form = self.query_one("#form")
            items = self.form_items()
            done = len(form.children)
            if done < min(count, len(items)):
                await form.mount_all(self.build(items[done:count]))
                if count >= len(items):
                    self.refresh_state()
            return count < len(items)

    def _on_screen_resume(self, event: events.ScreenResume) -> None:
        """Textual restyles a screen from scratch each time it comes on top. The first time,
        every widget has just been styled as it mounted, with the classes it has now: that
        restyle of the whole form cost about a fifth of the time to the first paint. Later
        resumes (a dialog closed) restyle as usual."""
        if not self.resumed_before:
            self.resumed_before = True
            event.refresh_styles = False

    # ------------------------------------------------------------------ state

    @property
    def document_name(self) -> str:
        return self.entry.path.name

    @property
    def dirty(self) -> bool:
        return self.working != self.saved or bool(self.field_errors)

    @property
    def errors(self) -> dict[str, str]:
        return {**self.cross_errors, **self.field_errors}

    def refresh_state(self) -> None:
        self.cross_errors = {}
        for problem in validate(self.working):
            if problem.key not in self.field_errors:
                self.cross_errors.setdefault(problem.key, problem.message)
        for row in self.query(FieldRow):
            row.show_error(self.errors.get(row.spec.path))
        if self.working.data != self.rows_for:
            self.rows_for, self.train_rows, self.counting_rows = self.working.data, None, True
            self.count_rows(self.working)
        checked = self.checked_memory
        real_peak = checked[1] if checked and checked[0] == self.working else None
        self.query_one("#derived", Static).update(
            "\n".join(f"{k}: {v}" for k, v in derived_values(self.working, self.train_rows, counting=self.counting_rows,
                                                              real_peak_gb=real_peak))
        )
        problems = self.errors
        warnings = hub_warnings(self.working)
        lines = [f"{k}: {v}" for k, v in problems.items()] + [f"warning: {k}: {v}" for k, v in warnings]
        self.query_one("#problems", Static).update(
            "\n".join(lines) if lines else "None: ready to save and run."
        )
        self.query_one("#problems", Static).set_class(bool(problems), "error-text")
        self.query_one("#problems", Static).set_class(bool(warnings) and not problems, "warning-text")
        self.sub_title = f"{self.entry.path.name}{' ● unsaved' if self.dirty else ''}"
        self.title = "Edit preset"

    @work(thread=True, exclusive=True, group="rows", exit_on_error=False, name="count train rows")
    def count_rows(self, cfg: Config) -> None:
        # A large local file is read line by line to count its rows: never on the UI thread.
        rows = count_train_rows(cfg)
        self.app.call_from_thread(self.rows_counted, cfg.data, rows)

    def rows_counted(self, data, rows: int | None) -> None:
        if data != self.rows_for:
            return  # the data settings changed again while counting; that count is coming
        self.train_rows, self.counting_rows = rows, False
        self.refresh_state()

    def set_field(self, path: str, value) -> None:
        if path not in self.field_errors and get_value(self.working, path) == value:
            return  # widgets report their initial values on mount: nothing changed
        problem = validate_field(path, value)
        if problem:
            self.field_errors[path] = problem
        else:
            self.field_errors.pop(path, None)
            self.working = replace_value(self.working, path, value)
        self.refresh_state()

    @on(Input.Changed)
    def input_changed(self, event: Input.Changed) -> None:
        if not (event.input.id or "").startswith("f-"):
            return
        path = path_of(event.input.id)
        try:
            value = parse_value(path, event.value, source="form")
        except ConfigError as exc:
            self.field_errors[path] = exc.problem
            self.refresh_state()
            return
        self.set_field(path, value)

    @on(Switch.Changed)
    def switch_changed(self, event: Switch.Changed) -> None:
        self.set_field(path_of(event.switch.id), event.value)

    @on(Select.Changed)
    def select_changed(self, event: Select.Changed) -> None:
        if event.value is not Select.BLANK:
            self.set_field(path_of(event.select.id), event.value)

    # ------------------------------------------------------------------ finding a field

    async def mount_all_rows(self) -> None:
        """Every row, at once: finding or jumping to a field needs the whole form."""
        await self.mount_upto(len(self.form_items()))

    async def action_find_field(self) -> None:
        await self.mount_all_rows()
        find = self.query_one("#find", Input)
        find.display = True
        find.focus()

    @on(Input.Changed, "#find")
    def find_changed(self, event: Input.Changed) -> None:
        self.filter_form(event.value)

    def filter_form(self, query: str) -> None:
        """Show the rows whose key or help holds every word of `query`, under their group
        titles; an empty query shows them all."""
        words = query.lower().split()
        group: Label | None = None
        group_shown = False
        for child in self.query_one("#form").children:
            if isinstance(child, FieldRow):
                haystack = f"{child.spec.path} {child.help_text}".lower()
                child.display = all(w in haystack for w in words)
                group_shown = group_shown or child.display
            else:
                if group is not None:
                    group.display = group_shown or not words
                group, group_shown = child, False
        if group is not None:
            group.display = group_shown or not words

    @on(Input.Submitted, "#find")
    def find_submitted(self) -> None:
        shown = [r for r in self.query(FieldRow) if r.display]
        if shown:
            self.focus_row(shown[0])

    def close_find(self) -> None:
        find = self.query_one("#find", Input)
        find.value = ""
        find.display = False
        self.filter_form("")

    def focus_row(self, row: FieldRow) -> None:
        widget = row.query_one(f"#{widget_id(row.spec.path)}")
        if widget.disabled:
            self.notify(f"{row.spec.path} is read-only: {row.spec.help}")
        else:
            widget.focus()
        row.scroll_visible(animate=False)

    async def jump_to_field(self, path: str) -> None:
        """From the command palette: the field, with the whole form shown around it."""
        await self.mount_all_rows()
        self.close_find()
        self.call_after_refresh(self.focus_row, next(r for r in self.query(FieldRow) if r.spec.path == path))

    def action_back(self) -> None:
        if self.query_one("#find", Input).display:
            self.close_find()
            first = next((r for r in self.query(FieldRow) if r.display), None)
            if first is not None:
                self.focus_row(first)
            return
        super().action_back()

    # ------------------------------------------------------------------ actions

    def _blocked(self) -> bool:
        if self.errors:
            first = next(iter(self.errors.items()))
            self.notify(f"Not saved: {first[0]}: {first[1]}", severity="error")
            return True
        return False

    def action_save(self) -> bool:
        if self._blocked():
            return False
        if store.changed_on_disk(self.entry):
            self.ask_about_disk_change()
            return False
        return self.save_merged()

    def save_merged(self) -> bool:
        """Write the keys changed here into the file as it is now. On failure (read-only,
        full, damaged elsewhere) one line, and the edits stay in the form."""
        try:
            path = store.save_changes(self.entry, self.working)
        except store.PresetFileError as exc:
            self.notify(f"Not saved: {exc}; your edits are kept", severity="error", timeout=10)
            return False
        merged_elsewhere = store.load_entry(path)
        # What another editor saved meanwhile is now in the file and in the form too.
        outside = merged_elsewhere.config is not None and merged_elsewhere.config != self.working
        self.show_entry(merged_elsewhere)
        self.notify(f"Saved {path.name}" + (" (merged with changes saved elsewhere)" if outside else ""))
        return True

    def show_entry(self, entry: store.PresetEntry) -> None:
        """Make ``entry`` (the file as read now) what the form shows and compares against."""
        self.entry = entry
        self.saved = self.working = entry.config or self.working
        self.field_errors = {}
        self.call_later(self._show_working)

    async def _show_working(self) -> None:
        await self.recompose()
        self.refresh_state()
        self.call_after_refresh(self.mount_more)

    def ask_about_disk_change(self) -> None:
        def done(choice: str | None) -> None:
            if choice == "merge":
                self.save_merged()
            elif choice == "reload":
                fresh = store.load_entry(self.entry.path)
                if fresh.config is None:
                    self.notify(f"Not reloaded: {fresh.problem}", severity="error", timeout=10)
                    return
                self.show_entry(fresh)
                self.notify(f"Reloaded {fresh.path.name}; your edits were dropped")
            elif choice == "save_as":
                self.action_save_as()

        self.app.push_screen(Confirm(
            f"{self.entry.path.name} changed on disk since you opened it",
            "Merge writes the keys you changed into the file as it is now; keys you did not touch keep "
            "the other save's values. Reload drops your edits. Save as keeps both.",
            [("cancel", "Keep editing", "default"), ("reload", "Reload", "warning"),
             ("save_as", "Save as…", "primary"), ("merge", "Merge", "success")]), done)

    def action_save_as(self) -> None:
        if self._blocked():
            return

        def done(name: str | None) -> None:
            if not name:
                return
            try:
                target = store.preset_path(self.entry.path.parent, name)
                if target.exists():
                    raise store.PresetFileError(f"{target.name} already exists")
                store.save_changes(self.entry, self.working, target=target)
            except store.PresetFileError as exc:
                self.notify(f"Not saved: {exc}; your edits are kept", severity="error", timeout=10)
                return
            self.show_entry(store.load_entry(target))
            self.notify(f"Saved as {target.name}")

        self.app.push_screen(AskName("Save as", f"{self.entry.name}-copy"), done)

    def action_start(self) -> None:
        """A run must match a file on disk, so unsaved edits are saved first."""
        if self.dirty and not self.action_save():
            return
        self.post_message(RunStartRequested(self.entry.path))

    def action_show_command(self) -> None:
        note = "  # unsaved changes are not in the file yet" if self.dirty else ""
        self.app.push_screen(ShowCommand("Train this preset", store.train_command(self.entry.path, self.workspace.runs_dir) + note))

    def action_preflight(self) -> None:
        self.query_one("#preflight", Static).update("Checking the data… (loads the dataset and tokenizer)")
        self.run_preflight(self.working)

    @work(thread=True, exclusive=True, exit_on_error=False, name="data check")
    def run_preflight(self, cfg: Config) -> None:
        # The check runs in a trainer subprocess: the app itself never imports datasets or mlx.
        from tui.preflight_client import PreflightError, run_preflight

        with tempfile.TemporaryDirectory(prefix="orpo-tui-preflight-") as tmp:
            path = dump_toml(cfg, Path(tmp) / f"{self.entry.name}.toml")
            try:
                report = run_preflight(path)
            except PreflightError as exc:
                self.app.call_from_thread(self.show_preflight_text, Text(f"error: {exc}", style="bold red"))
                return
        self.app.call_from_thread(self.show_preflight, report, cfg)

    def show_preflight(self, report, cfg: Config | None = None) -> None:
        from tui.preflight_client import format_report

        styles = {"error:": "bold red", "host problem:": "bold red", "warning:": "yellow",
                  "  prompt": "dim", "  chosen": "green", "  rejected": "red"}
        text = Text()
        for line in format_report(report):
            style = next((st for prefix, st in styles.items() if line.startswith(prefix)), "")
            text.append(line + "\n", style=style)
        self.show_preflight_text(text)
        if report.memory and cfg is not None:
            # The real-length figure holds for exactly the config that was checked.
            self.checked_memory = (cfg, report.memory["peak_memory_gb"])
        rows = (report.splits or {}).get("train")
        if rows:
            self.train_rows = rows
        if rows or report.memory:
            self.refresh_state()

    def show_preflight_text(self, text: Text) -> None:
        self.query_one("#preflight", Static).update(text)

    def commands(self):
        yield SystemCommand("Start run", "Save and train this preset in the background", self.action_start)
        yield SystemCommand("Save preset", "Save changed keys to the file", self.action_save)
        yield SystemCommand("Save preset as", "Save to a new preset file", self.action_save_as)
        yield SystemCommand("Check data", "Load the dataset and report rows, columns and lengths", self.action_preflight)
        yield SystemCommand("Show train command", "The orpo-train command for this preset", self.action_show_command)
        for _, specs in grouped_fields():
            for spec in specs:
                yield SystemCommand(f"Field {spec.path}", spec.help, lambda path=spec.path: self.run_worker(self.jump_to_field(path)))
