"""The two resource alarms over scripted metrics, and the monitor's resource line as text.

SLOW: pairs/s more than 30% below the run's own median for several reports in a row.
SWAP: the swap in use the app sampled while the run trained grows.
"""

import math
import os
import subprocess
import sys

from trainer.pure.metrics import ACTIVE_MEMORY_GB, LOSS, PAIRS_PER_SECOND, PEAK_MEMORY_GB
from tui.alarms import SLOW, SWAP, health_alarms, swap_alarm
from tui.resources import SystemMemory, TrainerProcess, TrainerUsage, format_bytes, resource_line
from tui.series import RunSeries

MB, GB = 1e6, 1e9


def series_of(pairs_per_second, every=10):
    """Train reports every `every` steps with these pairs/s (and a loss that keeps moving)."""
    series = RunSeries()
    series.add([{"event": "train", "step": (i + 1) * every, "time": 1000.0 + i, LOSS: 2.0 - 0.01 * i,
                 PAIRS_PER_SECOND: v} for i, v in enumerate(pairs_per_second)])
    return series


def slow(series):
    return [a for a in health_alarms(series) if a.kind == SLOW]


# --------------------------------------------------------------------------- throughput


def test_pairs_per_second_falling_a_third_below_the_median_for_three_reports_alarms_since_the_first():
    steady = [10.0, 10.4, 9.8, 10.1, 9.9, 10.2, 10.0, 9.7, 10.3, 10.0]
    alarms = slow(series_of(steady + [6.5, 6.8, 6.4]))
    assert len(alarms) == 1
    alarm = alarms[0]
    assert alarm.since_step == 110  # the 11th report, the first slow one
    assert "since step 110" in alarm.message and "for 3 reports" in alarm.message
    assert "median 10" in alarm.message and "36% below" in alarm.message  # 6.4 against 10.0


def test_the_stretch_is_traced_back_as_far_as_it_goes():
    steady = [10.0] * 12
    alarm = slow(series_of(steady + [5.0] * 6))[0]
    assert alarm.since_step == 130 and "for 6 reports" in alarm.message


def test_no_alarm_for_short_dips_small_dips_recovery_or_too_little_history():
    steady = [10.0, 10.4, 9.8, 10.1, 9.9, 10.2, 10.0, 9.7, 10.3, 10.0]
    assert slow(series_of(steady + [6.0, 6.0])) == []  # two reports are not "several"
    assert slow(series_of(steady + [7.2, 7.1, 7.3])) == []  # 28% below: within the allowance
    assert slow(series_of(steady + [6.0, 6.0, 6.0, 10.1])) == []  # it recovered
    assert slow(series_of([10.0, 10.0, 10.0, 10.0, 5.0, 5.0, 5.0])) == []  # 7 reports: no median to trust yet
    # A slow start (compiling, warming caches) before a steady pace is no alarm either.
    assert slow(series_of([3.0, 4.0, 5.0] + steady)) == []


def test_a_nan_rate_ends_the_slow_stretch():
    steady = [10.0] * 10
    assert slow(series_of(steady + [5.0, math.nan, 5.0, 5.0])) == []
    assert slow(series_of(steady + [math.nan, 5.0, 5.0, 5.0]))[0].since_step == 120


# --------------------------------------------------------------------------- swap


def test_swap_growing_during_the_run_alarms_from_the_step_growth_started():
    samples = [(0, 500 * MB), (10, 500 * MB + 1), (20, 480 * MB), (30, 560 * MB), (40, 900 * MB), (50, 1.7 * GB)]
    alarm = swap_alarm(samples)
    assert alarm is not None and alarm.kind == SWAP
    assert alarm.since_step == 30  # the first sample above the lowest level (480 MB at step 20)
    assert alarm.message == "swap in use grew by 1.22 GB since step 30 (480 MB → 1.7 GB): the run does not fit in memory"


def test_no_swap_alarm_when_flat_shrinking_within_noise_or_back_at_its_low():
    assert swap_alarm([]) is None and swap_alarm([(5, 1 * GB)]) is None
    assert swap_alarm([(0, 1 * GB), (10, 1 * GB), (20, 1 * GB)]) is None
    assert swap_alarm([(0, 2 * GB), (10, 1.5 * GB), (20, 1 * GB)]) is None  # shrinking
    assert swap_alarm([(0, 1 * GB), (10, 1 * GB + 30 * MB)]) is None  # under the 64 MiB it takes
    assert swap_alarm([(0, 1 * GB), (10, 3 * GB), (20, 1 * GB)]) is None  # grew and came back


def test_swap_growth_is_measured_from_the_latest_low():
    samples = [(0, 1 * GB), (10, 2 * GB), (20, 0.2 * GB), (30, 0.2 * GB), (40, 0.5 * GB)]
    alarm = swap_alarm(samples)
    assert alarm.since_step == 40 and "(200 MB → 500 MB)" in alarm.message


# --------------------------------------------------------------------------- the resource line


def test_resource_line_of_an_active_run_and_of_one_that_ended():
    last_train = {ACTIVE_MEMORY_GB: 0.021, PEAK_MEMORY_GB: 0.0404}
    usage = TrainerUsage(cpu_percent=187.4, rss=1.234 * GB)
    system = SystemMemory(available=10.24 * GB, swap_used=512 * MB)
    assert (resource_line("running", True, usage, system, last_train)
            == "CPU 187% RSS 1.23 GB · MLX active 21 MB peak 40.4 MB · available 10.2 GB · swap 512 MB")
    # CPU% needs two looks: the first says so instead of a made-up 0%.
    assert resource_line("running", True, TrainerUsage(None, 1 * GB), system, {}).startswith(
        "CPU … RSS 1 GB · MLX memory: no report yet")
    # Not active: no CPU, no system figures, only what the run's last report said.
    assert (resource_line("completed", False, None, None, last_train)
            == "trainer not running (completed) · last report: MLX active 21 MB peak 40.4 MB")
    assert resource_line("stopped", False, None, None, {PEAK_MEMORY_GB: 0.64}) == (
        "trainer not running (stopped) · last report: MLX peak 640 MB")  # a run from before active_memory_gb
    assert format_bytes(0) == "0 B" and format_bytes(1500) == "1.5 kB" and format_bytes(None) == "?"


def test_trainer_process_reads_cpu_and_rss_of_a_live_pid_and_nothing_of_a_gone_one():
    # It says when its interpreter is up: read before that, the pid is a half-started exec
    # of a few hundred KB (seen once in CI on a loaded machine).
    spin = "import time\nprint('up', flush=True)\nt = time.time()\nwhile time.time() - t < 30: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin], stdout=subprocess.PIPE, text=True)
    try:
        assert busy.stdout.readline().strip() == "up"
        watch = TrainerProcess(busy.pid)
        first = watch.usage()
        assert first is not None and first.cpu_percent is None and first.rss > 1 * MB
        import time

        time.sleep(0.5)
        second = watch.usage()
        assert second is not None and second.cpu_percent > 10  # a busy loop, even on a shared machine
    finally:
        busy.kill()
        busy.wait()
    assert watch.usage() is None
    assert TrainerProcess(os.getpid()).usage() is not None
