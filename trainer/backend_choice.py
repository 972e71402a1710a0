"""Which MLX distributed backend local ranks use when the preset says `auto` (no mlx here).

On macOS ring is Apple's default and the machines have many cores. On Linux: MPI when an MPI
library and mpirun are installed (MLX loads the library named by MLX_MPI_LIBNAME), else ring
with a note in train.log that it will not be faster. Why (tests/bench/distributed_scaling.py):
the ring transport polls its sockets while a collective waits for a peer, in the kernel (on a
loaded 2-core box the step's two all_sums cost each ring rank ~10 ms of system CPU per step,
MPI's none); between collectives it is idle (ranks computing without communicating use no
system CPU and do as much work per CPU second as plain processes; the "half speed with no
communication" first reported for ring did not show). Issue 15 measured two MPI ranks of a
matmul loop at 1.7x of one on a quiet 2-core box.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

MPI_LIBNAME_ENV = "MLX_MPI_LIBNAME"
# Where distributions and Homebrew put OpenMPI's (or MPICH's) library, for when ldconfig
# does not list it.
MPI_LIB_GLOBS = (
    "/usr/lib/*-linux-gnu/libmpi.so*",
    "/usr/lib/*-linux-gnu/openmpi/lib/libmpi.so*",
    "/usr/lib64/openmpi/lib/libmpi.so*",
    "/usr/lib64/libmpi.so*",
    "/usr/local/lib/libmpi.so*",
    "/opt/homebrew/lib/libmpi.dylib",
    "/usr/local/lib/libmpi.dylib",
)
SLOW_RING = ("on Linux the ring transport polls, so {n} ranks on this machine will not train faster "
             "than one; install OpenMPI (e.g. apt-get install openmpi-bin libopenmpi-dev) to use MPI")


@dataclass(frozen=True)
class Backend:
    name: str  # what the ranks pass to mx.distributed.init
    env: dict = field(default_factory=dict)  # set for every rank
    note: str = ""  # a line for train.log, when there is something to say


def find_libmpi() -> str | None:
    """The MPI library's path: from the dynamic linker's cache, else a usual place."""
    try:
        listed = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listed = ""
    for line in listed.splitlines():
        name, _, path = line.partition("=>")
        if name.strip().startswith("libmpi.so") and path.strip():
            return path.strip()
    for pattern in MPI_LIB_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def choose(requested: str, ranks: int, platform: str = sys.platform) -> Backend:
    """The backend for `ranks` local ranks; `requested` is a BACKENDS value."""
    if requested == "mpi" or (requested == "auto" and platform.startswith("linux")):
        lib = find_libmpi()
        if lib and shutil.which("mpirun"):
            return Backend("mpi", {MPI_LIBNAME_ENV: lib}, f"MPI library {lib}")
        if requested == "mpi":
            return Backend("mpi", {}, "mpi backend asked for, but no MPI library and mpirun were found")
        return Backend("ring", {}, SLOW_RING.format(n=ranks))
    if requested == "auto":
        return Backend("ring")
    return Backend(requested)


__all__ = ["Backend", "choose", "find_libmpi", "MPI_LIBNAME_ENV"]
