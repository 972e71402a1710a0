"""Every path inside a run folder, named once.

A run folder ``<runs_dir>/<YYYYmmdd-HHMMSS>-<label>[-N]/`` is the whole truth about a run;
the trainer writes it, the app reads it. Its layout (the contract, also in README.md):

======================================  ==================================================
``config.toml``                         the resolved config the run used (model.resolved_path
                                        names the local weights folder)
``status.json``                         state, pid, step, total_steps, error, world_size,
                                        rank_pids (atomic replace; see trainer.pure.rank_status)
``metrics.jsonl``                       one JSON event per line (see trainer.pure.events)
``train.log``                           the trainer's human-readable output
``train.rank<N>.log``                   rank N's output in a distributed run (N >= 1;
                                        rank 0 writes train.log and everything else)
``summary.json``                        what a finished or stopped run came to
``train.lock``                          flock-held by the trainer writing the folder
``adapters/adapters.safetensors``       latest adapters, mlx-lm format, with
``adapters/adapter_config.json``        their config (``--adapter-path RUN/adapters``)
``adapters/best/``                      the adapters of the best validation loss
``adapters/checkpoints/step-NNNNNNN/``  resumable checkpoints (adapters, optimizer, state.json)
``notes.md``, ``tags.json``             the user's notes and tags (written by the app)
``playground.jsonl``                    prompts and answers saved from the app's playground,
                                        one JSON object a line
``attempt-N/``                          an earlier attempt set aside by a resume that had no
                                        checkpoint and started over (its metrics, adapters,
                                        live TensorBoard events)
``fused/``, ``fused-best/``             standalone models written by ``orpo-train fuse``
``tensorboard/``                        TensorBoard event files of a run with ``[report] to``
                                        holding tensorboard (and no ``report.dir``)
``wandb/offline-run-*/``                the offline W&B run of one with wandb there
======================================  ==================================================

Pure module: no mlx, no textual.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["RunFolder", "CHECKPOINT_PREFIX"]

CHECKPOINT_PREFIX = "step-"
_CHECKPOINT_NAME = re.compile(r"^step-(\d+)$")
# A checkpoint is written under this prefix and renamed into place when complete.
_CHECKPOINT_TMP_PREFIX = ".tmp-step-"


class RunFolder:
    """The paths of one run folder. Creating one touches nothing on disk."""

    __slots__ = ("root",)

    def __init__(self, root: Any):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunFolder) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def name(self) -> str:
        return self.root.name

    # ------------------------------------------------------------------ the trainer's files

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def status(self) -> Path:
        return self.root / "status.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log(self) -> Path:
        return self.root / "train.log"

    def rank_log(self, rank: int) -> Path:
        """The output of rank `rank` >= 1 of a distributed run (rank 0's is train.log)."""
        return self.log if rank == 0 else self.root / f"train.rank{rank}.log"

    @property
    def lock(self) -> Path:
        """Held (flock) by the one trainer writing this folder; see trainer.pure.run_lock."""
        return self.root / "train.lock"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    # ------------------------------------------------------------------ adapters

    @property
    def adapters(self) -> Path:
        """The latest adapters, in mlx-lm's layout (what ``--adapter-path`` takes)."""
        return self.root / "adapters"

    @property
    def adapter_weights(self) -> Path:
        return self.adapters / ADAPTER_WEIGHTS

    @property
    def best(self) -> Path:
        return self.adapters / "best"

    @property
    def best_weights(self) -> Path:
        return self.best / ADAPTER_WEIGHTS

    @property
    def checkpoints(self) -> Path:
        return self.adapters / "checkpoints"

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"{CHECKPOINT_PREFIX}{step:07d}"

    def checkpoint_tmp(self, step: int, pid: int) -> Path:
        return self.checkpoints / f"{_CHECKPOINT_TMP_PREFIX}{step:07d}-{pid}"

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (incomplete ones are still under a temporary name)."""
        try:
            found = [p for p in self.checkpoints.iterdir()
                     if checkpoint_step(p) is not None and (p / CHECKPOINT_STATE).is_file()]
        except OSError:
            return None
        return max(found, key=checkpoint_step, default=None)

    def checkpoint_leftovers(self) -> list[Path]:
        """Checkpoint folders a killed trainer left half-written (only ever stale to the
        trainer that holds the run's lock)."""
        try:
            return sorted(p for p in self.checkpoints.iterdir() if is_checkpoint_tmp(p))
        except OSError:
            return []

    def attempt(self, n: int) -> Path:
        """Where an earlier attempt's metrics and adapters are kept when a resume had no
        checkpoint to continue from and started over."""
        return self.root / f"attempt-{n}"

    def next_attempt(self) -> Path:
        n = 1
        while self.attempt(n).exists():
            n += 1
        return self.attempt(n)

    def fused(self, best: bool = False) -> Path:
        return self.root / ("fused-best" if best else "fused")

    # ------------------------------------------------------------------ trackers (a preset's [report])

    @property
    def tensorboard(self) -> Path:
        """The live TensorBoard log folder when the preset names no ``report.dir``."""
        return self.root / "tensorboard"

    @property
    def wandb(self) -> Path:
        """Where W&B puts the run's offline run folder (``offline-run-*``) when the preset
        names no ``report.dir``: W&B itself adds the ``wandb`` part to the folder it is given."""
        return self.root / "wandb"

    # ------------------------------------------------------------------ the user's files

    @property
    def notes(self) -> Path:
        return self.root / "notes.md"

    @property
    def tags(self) -> Path:
        return self.root / "tags.json"

    @property
    def playground(self) -> Path:
        """Prompts and the answers to them saved from the playground (one JSON line each)."""
        return self.root / "playground.jsonl"

    # ------------------------------------------------------------------ questions

    def is_run(self) -> bool:
        """Whether the folder looks like a run (a config or a status written by a trainer)."""
        return self.root.is_dir() and (self.config.is_file() or self.status.is_file())


ADAPTER_WEIGHTS = "adapters.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
# Inside a checkpoint folder: the optimizer state and the loop's own state (step, best...).
OPTIMIZER_STATE = "optimizer.safetensors"
CHECKPOINT_STATE = "state.json"
# Also inside a checkpoint folder: adapters/best as it was then, put back on resume.
BEST_WEIGHTS_IN_CHECKPOINT = "best-adapters.safetensors"


def checkpoint_step(path: Any) -> int | None:
    """The step a checkpoint folder holds (``step-0000050`` -> 50), or None for any other name."""
    m = _CHECKPOINT_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def is_checkpoint_tmp(path: Any) -> bool:
    return Path(path).name.startswith(_CHECKPOINT_TMP_PREFIX)


__all__ += ["ADAPTER_WEIGHTS", "ADAPTER_CONFIG", "OPTIMIZER_STATE", "CHECKPOINT_STATE", "BEST_WEIGHTS_IN_CHECKPOINT",
            "checkpoint_step", "is_checkpoint_tmp"]
