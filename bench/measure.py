"""Runs a benchmark child process and measures it: wall time and memory of its process tree.

Two memory numbers, because neither alone is the whole story:

- ``max_process_mb``: the largest resident set of any single process in the tree: the largest
  high-water mark (``VmHWM`` in ``/proc/<pid>/status``, exact for its process) read at the last
  sample of each process. Not ``wait4``'s ``ru_maxrss``: the kernel counts in it the resident
  set the child had before its ``exec``, a copy of this (benchmark) process's.
- ``peak_tree_mb``: the largest sum of resident sets of the child and all its descendants,
  sampled from ``/proc`` every ``interval_s``. A sum of RSS counts pages shared between
  processes once per process, and a peak shorter than the interval can be missed. Each sample
  also keeps the child's own RSS, so a window's peak can leave the child out
  (``peak_between(..., descendants_only=True)``: under kfp.local the child is the driver and
  its descendants are the task's process).

And what wall time depends on besides the work: ``cpu_s`` is the tree's user + system time,
``others_cpu_s`` what the rest of the machine used meanwhile, ``disk_read_mb`` what the tree
read from disk rather than from the page cache (e.g. shared libraries evicted from it).
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import threading
import time
from pathlib import Path

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024
BLOCK_BYTES = 512  # the unit of ru_inblock


@dataclasses.dataclass(frozen=True)
class Measured:
    """A finished child: its wall time, exit code, memory, and the memory samples."""

    wall_s: float
    returncode: int
    max_process_mb: float
    samples: list[tuple[float, float, float]]  # (time.time(), tree RSS, the child's RSS) in MB
    load_avg: tuple[float, float]  # the 1-minute load average before and after
    cpu_s: float  # user + system time of the child and the descendants it waited for
    others_cpu_s: float  # CPU time every other process of the machine used meanwhile
    disk_read_mb: float  # read from disk (not the page cache) by the child and its descendants

    @property
    def peak_tree_mb(self) -> float | None:
        return max((mb for _, mb, _ in self.samples), default=None)

    def peak_between(self, start: float, end: float, descendants_only: bool = False
                     ) -> float | None:
        """The peak tree RSS sampled between two ``time.time()`` instants; with
        ``descendants_only``, the peak of the tree without the child itself."""
        return max((mb - (own if descendants_only else 0.0)
                    for t, mb, own in self.samples if start <= t <= end), default=None)


def tree_rss_mb(root: int) -> tuple[float, float, float]:
    """The summed RSS of ``root`` and all its descendants, ``root``'s own, and the largest
    high-water mark of one of them (``VmHWM``), in MB (0 once it has exited)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:  # exited while listed
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # field 4, after "(comm)"
        children.setdefault(parent, []).append(int(entry.name))
    total, own, largest, pending = 0, 0, 0, [root]
    while pending:
        pid = pending.pop()
        pending += children.get(pid, [])
        try:
            rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, IndexError):
            continue
        total += rss
        own = rss if pid == root else own
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        largest = max(largest, int(found[1]) * 1024 if found else rss)
    return total / MB, own / MB, largest / MB


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``, all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run(command: list[str], log_path: Path, cwd: Path, interval_s: float = 0.2) -> Measured:
    """Runs ``command`` with its output in ``log_path``; returns what was measured."""
    samples: list[tuple[float, float]] = []
    largest = 0.0
    stop = threading.Event()
    load_before, busy_before = os.getloadavg()[0], machine_busy_s()
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)

        def sample() -> None:
            nonlocal largest
            while not stop.wait(interval_s):
                tree, own, hwm = tree_rss_mb(process.pid)
                if tree > 0:  # 0: the child has exited, not a measurement
                    samples.append((time.time(), tree, own))
                    largest = max(largest, hwm)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4, not Popen.wait: its rusage carries the tree's CPU time and disk reads.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.monotonic() - started
        busy = machine_busy_s() - busy_before
        process.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, process.returncode, largest, samples,
                    (load_before, os.getloadavg()[0]), cpu, max(0.0, busy - cpu),
                    usage.ru_inblock * BLOCK_BYTES / MB)
