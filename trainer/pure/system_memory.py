"""How much memory a run may use on this machine, read without MLX, and the verdict on an
estimate against it.

The trainer asks MLX on Metal (the GPU's recommended working set, trainer/memory.py); the
app cannot load MLX, so on a Mac it takes the working set Metal usually recommends, about
three quarters of the RAM, and says so. Elsewhere it is the RAM available now
(`MemAvailable` of /proc/meminfo on Linux), which the trainer uses too.

ORPO_TRAIN_DEVICE_MEMORY_GB, when set, replaces the reading (for the trainer and the app):
a test hook that simulates a smaller (or larger) device.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

DEVICE_MEMORY_ENV = "ORPO_TRAIN_DEVICE_MEMORY_GB"
# Which estimate a verdict is about.
REAL_LENGTHS = "at the data's real lengths"
WORST_CASE = "worst case at max_seq_length"
# Metal's recommendedMaxWorkingSetSize is about this share of an Apple-silicon Mac's RAM.
METAL_WORKING_SET_SHARE = 0.75


@dataclass(frozen=True)
class DeviceMemory:
    bytes: float
    what: str  # where the figure comes from, for the verdict line


def system_memory() -> DeviceMemory | None:
    """The memory a run may use here, or None when it cannot be read."""
    override = os.environ.get(DEVICE_MEMORY_ENV)
    if override:
        try:
            return DeviceMemory(float(override) * 1e9, f"({DEVICE_MEMORY_ENV})")
        except ValueError:
            pass  # a malformed hook is ignored rather than trusted
    if sys.platform == "darwin":
        total = _physical_memory()
        if total is None:
            return None
        if metal_here():
            return DeviceMemory(total * METAL_WORKING_SET_SHARE, "Metal working set (about 3/4 of the RAM)")
        return DeviceMemory(total, "RAM")
    available = _meminfo_available()
    if available is not None:
        return DeviceMemory(available, "available RAM")
    total = _physical_memory()
    return DeviceMemory(total, "RAM") if total is not None else None


def metal_here() -> bool:
    """Whether MLX here runs on Metal (an Apple-silicon Mac), read without MLX."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def _meminfo_available(path: Path = Path("/proc/meminfo")) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024  # the kernel's kB are KiB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _physical_memory() -> float | None:
    try:
        return float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def size_text(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def fits(peak_bytes: float, device: DeviceMemory) -> bool:
    return peak_bytes <= device.bytes


def verdict(peak_bytes: float, device: DeviceMemory | None, which: str) -> str:
    """One line: whether an estimated peak fits the device; `which` says which estimate it
    is ("at the data's real lengths", "worst case at max_seq_length")."""
    if device is None:
        return f"est {size_text(peak_bytes)} {which}; this machine's memory could not be read"
    if fits(peak_bytes, device):
        return f"fits: est {size_text(peak_bytes)} {which} of {size_text(device.bytes)} {device.what}"
    return f"does not fit: est {size_text(peak_bytes)} {which}, more than the {size_text(device.bytes)} {device.what}"
