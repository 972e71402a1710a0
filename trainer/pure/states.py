"""Run states and sweep-queue item states: one vocabulary for the trainer, the queue and the app.

A trainer writes one of the :data:`WRITTEN` states into ``status.json``. Readers show the
*effective* state: ``crashed`` for an active state whose process is gone, ``unknown`` when
there is no readable status. The queue keeps its own item states (an item can wait or be
cancelled before it has a run); :data:`ITEM_AFTER_RUN` says which item state a run's final
state becomes, and :data:`ITEM_SHOWN_AS` which run state an item is drawn as.

Pure module: no mlx, no textual.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "RunState",
    "ItemState",
    "WRITTEN",
    "ACTIVE",
    "RESUMABLE",
    "ITEM_AFTER_RUN",
    "ITEM_SHOWN_AS",
    "STATE_STYLE",
    "item_state_after",
]


class RunState(str, Enum):
    PENDING = "pending"  # the trainer is loading (model, data); its pid is known
    RUNNING = "running"
    STOPPING = "stopping"  # a stop was asked for; the trainer finishes its step and saves
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"
    # Effective states only, never written by a trainer:
    CRASHED = "crashed"  # an active state whose process is gone
    UNKNOWN = "unknown"  # no readable status.json

    def __str__(self) -> str:
        return self.value

    # Hash as the plain string, so a dict keyed by states answers for "running" as well.
    __hash__ = str.__hash__


# What a trainer may write into status.json.
WRITTEN = (RunState.PENDING, RunState.RUNNING, RunState.STOPPING, RunState.STOPPED, RunState.COMPLETED,
           RunState.FAILED)
# A live trainer process is expected in these.
ACTIVE = (RunState.PENDING, RunState.RUNNING, RunState.STOPPING)
# Effective states that `orpo-train --resume` continues (an unreadable status too: the
# checkpoints, not the status, are what a resume starts from).
RESUMABLE = (RunState.STOPPED, RunState.CRASHED, RunState.FAILED, RunState.UNKNOWN)


class ItemState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    # Hash as the plain string, so a dict keyed by states answers for "running" as well.
    __hash__ = str.__hash__

    @classmethod
    def read(cls, text: object) -> ItemState:
        """An item state from queue.json; ``done`` is how queue files before 0.2 said completed."""
        if text == "done":
            return cls.COMPLETED
        try:
            return cls(text)
        except ValueError:
            return cls.FAILED


# The item state a trainer's final run state becomes (a cancel request overrides it).
ITEM_AFTER_RUN = {
    RunState.COMPLETED: ItemState.COMPLETED,
    RunState.STOPPED: ItemState.STOPPED,
    RunState.FAILED: ItemState.FAILED,
    RunState.CRASHED: ItemState.FAILED,
    RunState.UNKNOWN: ItemState.FAILED,
}

# How an item is drawn: as the run state that means the same to a user.
ITEM_SHOWN_AS = {
    ItemState.QUEUED: RunState.PENDING,
    ItemState.RUNNING: RunState.RUNNING,
    ItemState.COMPLETED: RunState.COMPLETED,
    ItemState.FAILED: RunState.FAILED,
    ItemState.STOPPED: RunState.STOPPED,
    ItemState.CANCELLED: RunState.STOPPED,
}

# Rich styles per effective run state, for every list that shows states.
STATE_STYLE = {
    RunState.PENDING: "cyan",
    RunState.RUNNING: "bold green",
    RunState.STOPPING: "yellow",
    RunState.STOPPED: "magenta",
    RunState.COMPLETED: "blue",
    RunState.FAILED: "bold red",
    RunState.CRASHED: "bold red",
    RunState.UNKNOWN: "dim",
}


def item_state_after(run_state: object) -> ItemState:
    """The item state for a run that ended in ``run_state`` (anything unreadable: failed)."""
    try:
        return ITEM_AFTER_RUN.get(RunState(run_state), ItemState.FAILED)
    except ValueError:
        return ItemState.FAILED
