"""The benchmark's arithmetic and plain-text tables: pure functions over measured numbers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ctloop.serving.client import percentile

# The issues' targets: the default runner against kfp.local and against the floor, at 10k rows.
MAX_KFP_LOCAL_RATIO = 0.6
MAX_FLOOR_RATIO = 1.0
RATIO_ROWS = 10_000
GROWTH_ROWS = 1_000_000
MAX_SERVING_RATIO = 2.0
# Peak memory (MB) per task, judged on kfp.local, where each task is a process of its own, as it is
# a pod of its own on a cluster: the task's process tree without kfp.local's driver (about 120 MB,
# kfp imported; older results without that split count it in), at every size run. Ingest,
# validate-data and train stream their data (a batch of rows at a time), so their bounds are
# meant to hold at any size: ingest ~ pandas and pyarrow
# plus a batch; validate-data and train ~ TensorFlow (600 MB) plus a batch. Evaluate builds its
# eval rows in memory (beam.Create from a frame), so its memory grows with the eval split: its
# bound is the same kind of process's, and a miss says the eval split outgrew it.
MEMORY_BOUNDS_MB = {"ingest": 300, "validate-data": 1000, "train": 800, "evaluate": 1000}
MEMORY_KIND = "kfp_local"


def latency_summary(latencies_ms: Sequence[float], wall_s: float, rows_per_request: int
                    ) -> dict[str, float]:
    """p50, p99 and mean latency, and requests and rows per second over ``wall_s``."""
    return {
        "requests": len(latencies_ms),
        "p50_ms": percentile(latencies_ms, 50),
        "p99_ms": percentile(latencies_ms, 99),
        "mean_ms": sum(latencies_ms) / len(latencies_ms),
        "requests_per_s": len(latencies_ms) / wall_s,
        "rows_per_s": len(latencies_ms) * rows_per_request / wall_s,
    }


def growth(times: dict[int, float]) -> list[dict[str, Any]]:
    """How time grows against rows: between consecutive sizes, and from the first to the last.

    Args:
        times: Rows -> seconds.

    Returns:
        One step per pair: ``from`` and ``to`` rows, ``rows_x`` and ``time_x`` (the factors),
        and ``linear_or_better`` (time grew by no more than the rows did).
    """
    sizes = sorted(times)
    pairs = list(zip(sizes, sizes[1:], strict=False))
    if len(sizes) > 2:
        pairs.append((sizes[0], sizes[-1]))
    steps = []
    for small, large in pairs:
        rows_x, time_x = large / small, times[large] / times[small]
        steps.append({"from": small, "to": large, "rows_x": rows_x, "time_x": time_x,
                      "linear_or_better": time_x <= rows_x})
    return steps


def targets(sizes: dict[int, dict[str, Any]], serving: dict[str, Any] | None
            ) -> list[dict[str, Any]]:
    """The issues' four targets, each measured (or why not) and met or missed.

    Args:
        sizes: Rows -> that size's results (``kfp_local_ratio`` and ``ratio``: the default
            runner's wall time / kfp.local's, / the floor's; ``pipeline.wall_s``).
        serving: The serving results (``served.single``: clients -> latency summary;
            ``in_process.single``: a latency summary), or None.
    """
    found = []
    for key, limit, other in (("kfp_local_ratio", MAX_KFP_LOCAL_RATIO, "kfp.local"),
                              ("ratio", MAX_FLOOR_RATIO, "the floor")):
        ratio = sizes.get(RATIO_ROWS, {}).get(key)
        found.append(_target(
            f"default runner <= {limit}x {other} at {RATIO_ROWS:,} rows",
            None if ratio is None else f"{ratio:.2f}x",
            None if ratio is None else ratio <= limit))

    times = {n: r["pipeline"]["wall_s"] for n, r in sizes.items() if "pipeline" in r}
    name = f"pipeline time grows no faster than rows up to {GROWTH_ROWS:,}"
    if GROWTH_ROWS in times and len(times) > 1:
        step = growth({n: t for n, t in times.items() if n <= GROWTH_ROWS})[-1]
        found.append(_target(name, _growth_text(step), step["linear_or_better"]))
    elif len(times) > 1:
        step = growth(times)[-1]
        found.append(_target(name, _growth_text(step) + f"; {GROWTH_ROWS:,} rows not run", None))
    else:
        found.append(_target(name, None, None))

    single = (serving or {}).get("served", {}).get("single", {})
    in_process = (serving or {}).get("in_process", {}).get("single")
    name = f"served p99 <= {MAX_SERVING_RATIO}x the in-process call (single rows, 1 client)"
    if 1 in single and in_process:
        p99_ratio = single[1]["p99_ms"] / in_process["p99_ms"]
        found.append(_target(
            name, f"{single[1]['p99_ms']:.2f} ms vs {in_process['p99_ms']:.2f} ms = "
            f"{p99_ratio:.1f}x", p99_ratio <= MAX_SERVING_RATIO))
    else:
        found.append(_target(name, None, None))
    return found


def memory(sizes: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Each task's peak memory at each size, its growth, and its bound.

    Args:
        sizes: Rows -> that size's results (``pipeline`` and ``kfp_local``: ``tasks``: task ->
            ``peak_tree_mb``, or ``task_peak_mb`` where measured (kfp.local: without the
            driver), and ``max_process_mb``).

    Returns:
        Runner (``pipeline``, ``kfp_local``) -> task (and ``largest process``) -> ``peaks_mb``
        (rows -> MB, None where the task was shorter than a sample), ``growth_mb`` and
        ``growth_x`` (the largest size's peak against the smallest's), ``bound_mb`` (kfp.local
        tasks in ``MEMORY_BOUNDS_MB``), ``within_bound`` (every measured peak within it).
    """
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for kind in ("pipeline", "kfp_local"):
        runs = {n: r[kind] for n, r in sorted(sizes.items()) if kind in r}
        if not runs:
            continue
        series: dict[str, dict[int, float | None]] = {}
        for rows, run in runs.items():
            for task, measured in run["tasks"].items():
                series.setdefault(task, {})[rows] = measured.get(
                    "task_peak_mb", measured.get("peak_tree_mb"))
            series.setdefault("largest process", {})[rows] = run["max_process_mb"]
        found[kind] = {}
        for task, peaks in series.items():
            first, last = peaks.get(min(runs)), peaks.get(max(runs))
            bound = MEMORY_BOUNDS_MB.get(task) if kind == MEMORY_KIND else None
            measured = [mb for mb in peaks.values() if mb is not None]
            found[kind][task] = {
                "peaks_mb": peaks,
                "growth_mb": None if None in (first, last) else last - first,
                "growth_x": None if None in (first, last) else last / first,
                "bound_mb": bound,
                "within_bound": (None if bound is None or not measured
                                 else max(measured) <= bound),
            }
    return found


def memory_targets(found: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One target per bounded task: its largest peak at any size run within its bound.

    Args:
        found: ``memory``'s result.
    """
    tasks = found.get(MEMORY_KIND, {})
    targets_found = []
    for task, bound in MEMORY_BOUNDS_MB.items():
        name = f"{task} peak <= {bound:,} MB at every size (kfp.local)"
        peaks = {n: mb for n, mb in tasks.get(task, {}).get("peaks_mb", {}).items()
                 if mb is not None}
        if not peaks:
            targets_found.append(_target(name, None, None))
            continue
        largest = max(peaks, key=peaks.get)
        targets_found.append(_target(
            name, f"max {peaks[largest]:,.0f} MB (at {largest:,} rows)", peaks[largest] <= bound))
    return targets_found


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _growth_text(step: dict[str, Any]) -> str:
    return (f"{step['from']:,} -> {step['to']:,} rows ({step['rows_x']:g}x): "
            f"time {step['time_x']:.2f}x")


def _target(name: str, measured: str | None, met: bool | None) -> dict[str, Any]:
    verdict = "not measured" if measured is None else {True: "met", False: "MISSED",
                                                        None: "not measured"}[met]
    return {"target": name, "measured": measured or "-", "met": met, "verdict": verdict}
