"""`orpo-tui [--presets DIR] [--runs-dir DIR]`: start the app.

Also the comparison subcommands, which print and exit without starting the app:
`orpo-tui diff A B [--all]`, `orpo-tui export RUN [--out FILE | --to TRACKER [TARGET]]`,
`orpo-tui summary [RUN...] [--runs-dir DIR] [--csv]`, and the runs list for a plain shell,
`orpo-tui ls [--runs-dir DIR] [--json]`; and `orpo-tui serve-web [--port N] [--presets DIR]
[--runs-dir DIR]`, the app in a browser tab (tui/web_view.py). They are dispatched on the first argument before the
app's own parser, so the app's flags stay as they were, and they never import textual.
Exit codes: 0 done, 2 a path that is not a run or preset, a tracker whose library is not
installed, or for serve-web a port in use or textual-serve not installed (one line on stderr),
1 a tracker that failed while writing (one line too).

`export --to` writes through the trackers' own libraries (trainer.trackers), which load numpy:
they are imported only when that command runs, in its own short-lived process; the app never
loads them (tests/test_layering.py checks the modules the app imports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

from trainer.pure import tracking as T
from tui.settings import app_folders, load_notify, seed_user_presets

_SUBCOMMANDS = ("diff", "export", "summary")
WEB_DEFAULT_PORT = 8000


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _SUBCOMMANDS:
        return _compare_main(argv)
    if argv[:1] == ["ls"]:
        return _ls_main(argv[1:])
    if argv[:1] == ["serve-web"]:
        return _serve_web_main(argv[1:])
    parser = argparse.ArgumentParser(prog="orpo-tui", description="Terminal experiment manager for ORPO on MLX.")
    parser.add_argument("--presets", metavar="DIR",
                        help="folder of preset TOML files (default: presets_dir in the settings file, else a checkout's "
                             "presets/, else the user's, e.g. ~/.config/orpo-tui/presets; F1 shows the one in use)")
    parser.add_argument("--runs-dir", metavar="DIR",
                        help="folder of run directories (default: runs_dir in the settings file, else a checkout's runs/, "
                             "else the user's, e.g. ~/.local/share/orpo-tui/runs)")
    args = parser.parse_args(argv)
    folders = app_folders(args.presets, args.runs_dir)
    try:
        seed_user_presets(folders.presets)
    except OSError as exc:  # the list then says the folder is empty; the app still starts
        print(f"orpo-tui: could not create {folders.presets}: {exc.strerror or exc}", file=sys.stderr)

    from tui.app import make_app  # textual is loaded only when the app really starts

    notify, problems = load_notify()
    app = make_app(folders.presets, folders.runs, notify, problems)
    app.run()
    if app.crash:
        print(app.crash, file=sys.stderr)
    # Textual sets a non-zero code after an unexpected error; a crash must never exit 0.
    return app.return_code or (1 if app.crash else 0)


def _compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orpo-tui", description="Compare runs and presets.")
    sub = parser.add_subparsers(dest="command", required=True)
    diff = sub.add_parser("diff", help="side-by-side config diff of two runs or presets")
    diff.add_argument("a", metavar="A", help="run directory or preset .toml")
    diff.add_argument("b", metavar="B", help="run directory or preset .toml")
    diff.add_argument("--all", action="store_true", help="show unchanged keys too")
    export = sub.add_parser("export", help="a run's train/val metrics as CSV, or the whole run into a tracker",
                            usage="orpo-tui export RUN [--out FILE | --to TRACKER [TARGET]] [--project PROJECT]")
    export.add_argument("run", metavar="RUN", help="run directory")
    export.add_argument("--out", metavar="FILE", help="write the CSV here instead of stdout")
    export.add_argument("--to", nargs="+", metavar=("TRACKER", "TARGET"),
                        help="write metrics, config and samples into a tracker instead: tensorboard DIR (its log "
                             "folder), trackio PROJECT (its local database), or wandb [DIR] (an offline run under "
                             "DIR/wandb/, default the current folder)")
    export.add_argument("--project", default=T.DEFAULT_PROJECT, help=f"the W&B project (default {T.DEFAULT_PROJECT})")
    summary = sub.add_parser("summary", help="headline numbers of one or more runs")
    summary.add_argument("runs", metavar="RUN", nargs="*",
                         help="run directories (default: every run in the runs folder; other paths are skipped)")
    summary.add_argument("--runs-dir", metavar="DIR", help="the runs folder to summarize (default: the app's)")
    summary.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    return parser


def _compare_main(argv: list[str]) -> int:
    # Imported here so that starting the app does not pay for the comparison code.
    from tui.compare import CompareError

    args = _compare_parser().parse_args(argv)
    if args.command == "export" and args.to is not None:
        return _export_to_tracker(args)
    try:
        text = {"diff": _diff, "export": _export, "summary": _summary}[args.command](args)
    except CompareError as exc:
        print(f"orpo-tui {args.command}: {exc}", file=sys.stderr)
        return 2
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _diff(args: argparse.Namespace) -> str:
    from tui.compare import config_diff, format_diff, load_side

    a, b = load_side(args.a), load_side(args.b)
    tty = sys.stdout.isatty()
    # https://no-color.org: any non-empty NO_COLOR turns colour off; pipes never get it.
    color = tty and not os.environ.get("NO_COLOR")
    width = shutil.get_terminal_size((100, 24)).columns if tty else 100
    return format_diff(config_diff(a, b, only_changed=not args.all), a.label, b.label, color, width)


def _export(args: argparse.Namespace) -> str:
    from pathlib import Path

    from trainer.pure.runs import atomic_write_text
    from tui.compare import CompareError, check_run_dir, metrics_to_csv

    text = metrics_to_csv(check_run_dir(Path(args.run)))
    if args.out is None:
        return text
    try:
        atomic_write_text(Path(args.out), text)
    except OSError as exc:
        raise CompareError(f"{args.out}: cannot write: {exc.strerror or exc}") from None
    return ""


def _tracker_target(to: list[str]) -> tuple[str, str]:
    """`--to`'s tracker and target, or a CompareError saying what it takes."""
    from tui.compare import CompareError

    usage = "expected tensorboard DIR, trackio PROJECT or wandb [DIR]"
    tracker, rest = to[0], to[1:]
    if tracker not in T.TRACKERS:
        raise CompareError(f"--to: unknown tracker {tracker!r}; {usage}")
    if len(rest) > 1 or (tracker != T.WANDB and not rest):
        raise CompareError(f"--to {tracker}: {usage}")
    return tracker, rest[0] if rest else "."


def _export_to_tracker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from trainer.pure.messages import describe
    from trainer.trackers import TrackerMissing, export_run  # the libraries load at command time only
    from tui.compare import CompareError, check_run_dir

    try:
        if args.out is not None:
            raise CompareError("--out is for the CSV export; --to writes into the tracker")
        tracker, target = _tracker_target(args.to)
        where = export_run(check_run_dir(Path(args.run)), tracker, target, args.project)
    except (CompareError, TrackerMissing) as exc:
        print(f"orpo-tui export: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - whatever the library raises: one line, never a traceback
        print(f"orpo-tui export: {args.to[0]}: {describe(exc)}", file=sys.stderr)
        return 1
    _out(where)
    return 0


def _summary(args: argparse.Namespace) -> str:
    from pathlib import Path

    from trainer.pure.runs import list_runs
    from tui.compare import CompareError, format_summaries, summaries_to_csv, summarize_paths

    if args.runs:
        paths = [Path(run) for run in args.runs]
    else:
        runs_dir = app_folders(None, args.runs_dir).runs
        # Oldest first, as a shell glob over the stamped names lists them.
        paths = list(reversed(list_runs(runs_dir)))
        if not paths:
            raise CompareError(f"{runs_dir}: no runs")
    rows, skipped = summarize_paths(paths)
    for line in skipped:
        print(f"orpo-tui summary: {line}", file=sys.stderr)
    return summaries_to_csv(rows) if args.csv else format_summaries(rows)


def _ls_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="orpo-tui ls", description="The runs list: state (a crashed run's cause), "
                                     "step, loss, val loss, val accuracy, started, duration.")
    parser.add_argument("--runs-dir", metavar="DIR", help="the runs folder (default: the app's)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts (keys: see README)")
    args = parser.parse_args(argv)
    runs_dir = app_folders(None, args.runs_dir).runs
    if not runs_dir.is_dir():
        print(f"orpo-tui ls: {runs_dir}: no such runs folder", file=sys.stderr)
        return 2

    from tui.runs_table import format_ls, json_ready, ls_records

    records = ls_records(runs_dir)
    if args.json:
        _out(json.dumps(json_ready(records), indent=2, allow_nan=False))
    elif records:
        _out(format_ls(records))
    else:
        print(f"no runs in {runs_dir}", file=sys.stderr)
    return 0


def _serve_web_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="orpo-tui serve-web", description="The app in a browser tab, on 127.0.0.1 only "
                                     "(from another machine: ssh -L 8000:127.0.0.1:8000 HOST, then open the printed URL). "
                                     "Each tab runs its own app on the same folders. Prints the URL first; Ctrl-C stops it.")
    parser.add_argument("--port", type=int, default=WEB_DEFAULT_PORT, metavar="N",
                        help=f"port on 127.0.0.1 (default: {WEB_DEFAULT_PORT})")
    parser.add_argument("--presets", metavar="DIR", help="folder of preset TOML files (default: as for orpo-tui)")
    parser.add_argument("--runs-dir", metavar="DIR", help="folder of run directories (default: as for orpo-tui)")
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port}: not a port number (1-65535)")
    try:
        from tui.web_view import serve
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in ("", "tui"):  # our own bug, not a missing extra
            raise
        print(f"orpo-tui serve-web: textual-serve is not installed (no module {missing}): pip install 'orpo-tui[web]'",
              file=sys.stderr)
        return 2
    folders = app_folders(args.presets, args.runs_dir)
    # Absolute, so that each tab's app sees the folders whatever its working directory.
    return serve(folders.presets.resolve(), folders.runs.resolve(), args.port)


def _out(text: str) -> None:
    """Print, letting a reader that stopped early (`| head`) end the output quietly."""
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; pointing it at /dev/null keeps that quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
