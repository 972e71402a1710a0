"""Resume a run on a number of ranks the user picks: the checkpoint is global state, so any
number of ranks continues it (`--set distributed.np=N`; the trainer refuses a batch size
that does not divide, with its one line)."""

from __future__ import annotations

from pathlib import Path

from textual.screen import Screen

from tui.messages import RunResumeRequested
from tui.widgets.ask_name import AskName

NP_KEY = "distributed.np"


def parse_ranks(text: str) -> int | None:
    try:
        n = int(text)
    except ValueError:
        return None
    return n if n >= 1 else None


def ask_resume_ranks(screen: Screen, run_dir: Path, current: int) -> None:
    def done(text: str | None) -> None:
        if text is None:
            return
        n = parse_ranks(text)
        if n is None:
            screen.notify(f"'{text}' is not a number of ranks (1 or more)", severity="error")
            return
        screen.post_message(RunResumeRequested(run_dir, [f"{NP_KEY}={n}"]))

    screen.app.push_screen(AskName(f"Resume {Path(run_dir).name} on how many ranks? (last start: {current})",
                                   str(current)), done)
