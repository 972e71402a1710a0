"""What a run costs the machine, for the monitor's resource line: the trainer's CPU and
resident memory (psutil, on the run's pid), MLX's memory at the last report (from the run's
train events), and the system's available memory and swap in use (psutil).

psutil is imported on first use: the app starts without paying for it, and only a monitor
(or a run that is training) needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainer.pure.metrics import ACTIVE_MEMORY_GB, PEAK_MEMORY_GB

__all__ = ["SystemMemory", "TrainerUsage", "TrainerProcess", "system_memory", "format_bytes", "resource_line"]


@dataclass(frozen=True)
class SystemMemory:
    available: float  # bytes
    swap_used: float  # bytes


@dataclass(frozen=True)
class TrainerUsage:
    cpu_percent: float | None  # None on the first look: CPU% needs two
    rss: float  # bytes


def system_memory() -> SystemMemory:
    import psutil

    return SystemMemory(float(psutil.virtual_memory().available), float(psutil.swap_memory().used))


class TrainerProcess:
    """The trainer's process, kept between looks: psutil's CPU% is the share of CPU time
    since the previous look, so the same Process objects must be asked each time.

    A distributed run's pid is its launcher, which trains nothing: its ranks are its
    children (under MPI, mpirun's), so the figures are those of the whole process tree."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc = None
        self._known: dict[int, object] = {}  # pid -> psutil.Process, primed for CPU%

    def usage(self) -> TrainerUsage | None:
        """CPU% (of one core; a trainer on four cores can show 400%) and RSS, summed over the
        trainer and its descendants, or None when the process is gone or not ours to look at."""
        import psutil

        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            tree = [self._proc, *self._proc.children(recursive=True)]
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            return None
        cpu, rss, unprimed, seen = 0.0, 0.0, False, {}
        for proc in tree:
            known = self._known.get(proc.pid, proc)  # the same object as last time, for its CPU%
            try:
                with known.oneshot():
                    part = known.cpu_percent(interval=None)
                    rss += float(known.memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if known is self._proc:
                    return None
                continue
            unprimed |= proc.pid not in self._known
            cpu += part
            seen[proc.pid] = known
        self._known = seen
        # A process seen for the first time has no CPU% yet: say so rather than a low figure.
        return TrainerUsage(None if unprimed else cpu, rss)


def format_bytes(n: float | None) -> str:
    """Bytes in decimal units (GB = 1e9, as the metrics' *_gb), three significant digits."""
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _mlx_part(last_train: dict) -> str:
    # A run from before active_memory_gb existed has only its peak.
    parts = [f"{label} {format_bytes(value * 1e9)}" for label, value in
             (("active", last_train.get(ACTIVE_MEMORY_GB)), ("peak", last_train.get(PEAK_MEMORY_GB)))
             if isinstance(value, (int, float)) and not isinstance(value, bool)]
    return "MLX " + " ".join(parts) if parts else "MLX memory: no report yet"


def resource_line(state: str, active: bool, usage: TrainerUsage | None, system: SystemMemory | None,
                  last_train: dict) -> str:
    """One line. While the run is active: the trainer's CPU% and RSS, MLX's active and peak
    memory at the last report, the system's available memory and swap in use. Otherwise it
    says the trainer is not running and gives MLX's figures of the last report only: CPU and
    system figures would describe the machine now, not the run."""
    mlx = _mlx_part(last_train)
    if not active:
        return f"trainer not running ({state}) · last report: {mlx}"
    if usage is None:
        trainer = "trainer: no process to read"
    else:
        cpu = "…" if usage.cpu_percent is None else f"{usage.cpu_percent:.0f}%"
        trainer = f"CPU {cpu} RSS {format_bytes(usage.rss)}"
    parts = [trainer, mlx]
    if system is not None:
        parts.append(f"available {format_bytes(system.available)} · swap {format_bytes(system.swap_used)}")
    return " · ".join(parts)
