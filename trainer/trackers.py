"""Writing a run into experiment trackers with their own libraries: TensorBoard (tensorboardX),
Trackio (its local database) and Weights & Biases (offline mode only; nothing leaves the machine).

Two users: :func:`export_run` replays a run folder (`orpo-tui export RUN --to ...`), and
:class:`LiveTrackers` follows a training run event by event (a preset's ``[report] to``).
Both turn events into rows through trainer.pure.tracking, so an export and a live log of the
same run hold the same tags, values, steps and wall times.

The libraries load numpy (and W&B starts a helper process), so they are imported only when a
tracker is opened; importing this module stays as light as trainer.pure. No mlx, no textual.
"""

from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

from trainer.pure import tracking as T
from trainer.pure.events import read_events
from trainer.pure.messages import describe
from trainer.pure.run_folder import RunFolder

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["TrackerMissing", "check_installed", "open_sink", "export_run", "run_hparams", "LiveTrackers"]


class TrackerMissing(Exception):
    """A tracker's library is not installed; the message is the one line naming the extra."""


def _library(tracker: str) -> Any:
    try:
        return importlib.import_module(T.module_of(tracker))
    except ImportError as exc:
        raise TrackerMissing(T.install_hint(tracker)) from exc


def check_installed(trackers: Iterable[str]) -> None:
    """Import each tracker's library now, so a run that cannot report where it was told to
    is refused before it trains rather than found silent afterwards."""
    for tracker in trackers:
        _library(tracker)


def run_hparams(run_dir: Path) -> dict:
    """The run's config.toml as flat hyperparameters ({} when it is missing or unreadable:
    the metrics are still worth exporting)."""
    try:
        return T.flat_hparams(tomllib.loads(RunFolder(run_dir).config.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return {}


class Sink:
    """One open tracker run. `event` takes a metrics.jsonl record as written or as read."""

    def event(self, record: dict) -> None:
        rows = T.scalars(record)
        if rows:
            self.scalars(rows)
        found = T.sample(record)
        if found is not None:
            self.sample(found)

    def scalars(self, rows: list[T.Scalar]) -> None:
        raise NotImplementedError

    def sample(self, found: T.Sample) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class TensorBoardSink(Sink):
    """Event files in `logdir`: scalars at their steps and wall times, samples as text, the
    config through the hparams plugin. `purge_step` hides events at or past it that an earlier
    attempt wrote (a resumed run redoes them)."""

    def __init__(self, logdir: Path, hparams: dict, purge_step: int | None = None, live: bool = False):
        tbx = _library(T.TENSORBOARD)
        from tensorboardX.summary import hparams as hparams_summaries

        self.live = live
        self.writer = tbx.SummaryWriter(logdir=str(logdir), purge_step=purge_step)
        if hparams:
            # Only the metric names count here: the table reads their values from the run's scalars.
            for summary in hparams_summaries(hparams, dict.fromkeys(T.HPARAM_METRICS, 0.0)):
                self.writer.file_writer.add_summary(summary)

    def event(self, record: dict) -> None:
        super().event(record)
        if self.live:
            # Reports come seconds apart: on disk at once, a watching TensorBoard shows what
            # metrics.jsonl shows, and a killed run loses nothing it reported.
            self.writer.flush()

    def scalars(self, rows: list[T.Scalar]) -> None:
        for row in rows:
            self.writer.add_scalar(row.tag, row.value, row.step, walltime=row.wall_time)

    def sample(self, found: T.Sample) -> None:
        self.writer.add_text(found.tag, found.markdown(), found.step, walltime=found.wall_time)

    def close(self) -> None:
        self.writer.close()


class TrackioSink(Sink):
    """A run in a local Trackio project (under $TRACKIO_DIR, else the Hugging Face cache).
    Trackio's log() takes no time of its own: each row is stamped when it is logged."""

    def __init__(self, project: str, name: str, hparams: dict):
        self.trackio = _library(T.TRACKIO)
        # No CPU/GPU sampling thread: the rows are the run's own metrics, nothing else.
        self.run = self.trackio.init(project=project, name=name, config=hparams, auto_log_cpu=False, auto_log_gpu=False)

    def scalars(self, rows: list[T.Scalar]) -> None:
        self.run.log({row.tag: row.value for row in rows}, step=rows[0].step)

    def sample(self, found: T.Sample) -> None:
        table = self.trackio.Table(columns=["step", "index", "prompt", "completion"],
                                   data=[[found.step, found.index, found.prompt, found.completion]])
        self.run.log({found.tag: table}, step=found.step)

    def close(self) -> None:
        # trackio.finish() also forgets the run, so its exit hook does not finish it again.
        try:
            self.trackio.finish()
        except RuntimeError:  # not this thread's current run
            self.run.finish()


class WandbSink(Sink):
    """An offline W&B run folder under `<root>/wandb/` (`wandb sync` uploads it later, if ever).
    W&B keeps one history row per step: a step's train and val values share it, stamped with
    the latest of their wall times."""

    def __init__(self, root: Path, project: str, name: str, hparams: dict):
        # Offline whatever the user's environment says: this code never talks to a server.
        os.environ["WANDB_MODE"] = "offline"
        self.wandb = _library(T.WANDB)
        root.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(project=project, name=name, config=hparams, dir=str(root), mode="offline",
                                   settings=self.wandb.Settings(console="off", silent=True))

    def scalars(self, rows: list[T.Scalar]) -> None:
        values: dict[str, Any] = {row.tag: row.value for row in rows}
        values["_timestamp"] = rows[0].wall_time
        self.run.log(values, step=rows[0].step)

    def sample(self, found: T.Sample) -> None:
        table = self.wandb.Table(columns=["step", "index", "prompt", "completion"],
                                 data=[[found.step, found.index, found.prompt, found.completion]])
        self.run.log({found.tag: table, "_timestamp": found.wall_time}, step=found.step)

    @property
    def folder(self) -> Path:
        return Path(self.run.dir).parent

    def close(self) -> None:
        self.run.finish()


def open_sink(tracker: str, target: Path | str, name: str, hparams: dict, project: str = T.DEFAULT_PROJECT,
              purge_step: int | None = None, live: bool = False) -> Sink:
    """Open `tracker` for the run called `name`: `target` is TensorBoard's log folder,
    Trackio's project, or the folder W&B puts its `wandb/` folder in (its project: `project`)."""
    if tracker == T.TENSORBOARD:
        return TensorBoardSink(Path(target), hparams, purge_step, live)
    if tracker == T.TRACKIO:
        return TrackioSink(str(target), name, hparams)
    if tracker == T.WANDB:
        return WandbSink(Path(target), project, name, hparams)
    raise ValueError(f"unknown tracker {tracker!r}; expected one of {', '.join(T.TRACKERS)}")


def export_run(run_dir: Path, tracker: str, target: Path | str, project: str = T.DEFAULT_PROJECT) -> str:
    """Write a run's metrics, config and samples into `tracker`; returns where they went.
    The libraries' chatter goes to stderr: stdout holds only that answer."""
    folder = RunFolder(run_dir)
    events = read_events(folder.metrics)
    with redirect_stdout(sys.stderr):
        sink = open_sink(tracker, target, folder.name, run_hparams(folder.root), project)
        try:
            for record in events:
                sink.event(record)
        finally:
            sink.close()
    if isinstance(sink, WandbSink):
        return str(sink.folder)
    if tracker == T.TRACKIO:
        return f"trackio project {target}, run {folder.name}"
    return str(target)


class LiveTrackers:
    """The trackers a training run reports to (a preset's ``[report]``), fed each event the
    run writes to metrics.jsonl. They open at the first event, after a resume has said where
    it continues. A tracker that raises is closed and dropped with one line in the log:
    training never stops over a dashboard."""

    def __init__(self, trackers: Iterable[str], run_dir: Path, log: Callable[[str], None], directory: str = "",
                 project: str = T.DEFAULT_PROJECT):
        self.wanted = tuple(dict.fromkeys(trackers))  # a tracker named twice is still one writer
        self.folder = RunFolder(run_dir)
        self.log = log
        self.directory = directory
        self.project = project
        self.purge_step: int | None = None
        self.sinks: dict[str, Sink] | None = None

    def resumed_at(self, step: int) -> None:
        self.purge_step = step + 1

    def target(self, tracker: str) -> Path | str:
        if tracker == T.TRACKIO:
            return self.project
        if tracker == T.TENSORBOARD:
            # A shared folder holds one subfolder per run, which is how TensorBoard tells runs apart.
            return Path(self.directory) / self.folder.name if self.directory else self.folder.tensorboard
        return Path(self.directory) if self.directory else self.folder.root

    def _open(self) -> dict[str, Sink]:
        sinks: dict[str, Sink] = {}
        hparams = run_hparams(self.folder.root)
        for tracker in self.wanted:
            try:
                # The libraries' banners would land untimestamped in train.log; the line below says where it goes.
                with redirect_stdout(io.StringIO()):
                    sinks[tracker] = open_sink(tracker, self.target(tracker), self.folder.name, hparams, self.project,
                                               self.purge_step, live=True)
            except Exception as exc:  # noqa: BLE001 - whatever a tracker raises, training goes on
                self.log(f"{tracker}: cannot start: {describe(exc)}; the run goes on without it")
                continue
            self.log(f"reporting to {tracker}: {self.target(tracker)}")
        return sinks

    def event(self, record: dict) -> None:
        if self.sinks is None:
            self.sinks = self._open()
        for tracker, sink in list(self.sinks.items()):
            try:
                with redirect_stdout(io.StringIO()):
                    sink.event(record)
            except Exception as exc:  # noqa: BLE001
                self.log(f"{tracker}: {describe(exc)}; no longer reporting to {tracker}")
                self._drop(tracker)

    def _drop(self, tracker: str) -> None:
        sink = self.sinks.pop(tracker)
        try:
            sink.close()
        except Exception:  # noqa: BLE001 - already reported as broken
            pass

    def close(self) -> None:
        for tracker in list(self.sinks or ()):
            try:
                with redirect_stdout(io.StringIO()):
                    self.sinks[tracker].close()
            except Exception as exc:  # noqa: BLE001
                self.log(f"{tracker}: cannot finish: {describe(exc)}")
            del self.sinks[tracker]
