"""The benchmark's printed tables: one per section, from the numbers ``bench.run`` measured."""

from __future__ import annotations

from typing import Any

from bench import report

# Result key and title of each measured child, in the tables' column order.
KINDS = (("pipeline", "default"), ("kfp_local", "kfp.local"), ("floor", "floor"))


def size_table(rows: int, found: dict[str, Any]) -> str:
    """Per task, for each runner and the floor: wall and CPU seconds and peak memory."""
    kinds = [(key, title) for key, title in KINDS if key in found]
    parts = {key: found[key].get("tasks") or found[key].get("steps", {}) for key, _ in kinds}
    lines = []
    for name in dict.fromkeys(["imports", *[t for p in parts.values() for t in p]]):
        line: list[Any] = [name]
        for key, _ in kinds:
            part = parts[key].get(name, {})
            line += [part.get("s"), part.get("cpu_s"), part.get("peak_tree_mb")]
        lines.append(line)
    # What the steps do not cover: interpreter start and exit; for the pipeline also the
    # driver's kfp import, the pipeline's compilation and the hand-offs between tasks.
    outside, whole = ["outside the steps"], ["process (whole run)"]
    for key, _ in kinds:
        run = found[key]
        outside += [run["wall_s"] - sum(p["s"] for p in parts[key].values()),
                    run["cpu_s"] - sum(p["cpu_s"] for p in parts[key].values()), None]
        whole += [run["wall_s"], run["cpu_s"], run["peak_tree_mb"]]
    lines += [outside, whole]
    headers = ["task"]
    for _, title in kinds:
        headers += [f"{title} s", f"{title} CPU s", f"{title} peak MB"]
    split = found[kinds[0][0]].get("split_rows", {}) if kinds else {}
    text = [f"\n== {rows:,} rows ({split.get('train', 0):,} train / {split.get('eval', 0):,} "
            "eval) ==", report.table(headers, lines)]
    for key, title in kinds:
        v = found[key]["verdicts"]
        text.append(
            f"{title}: largest process {found[key]['max_process_mb']:,.0f} MB; auc "
            f"{v['auc']:.4f}, data valid {v['data_valid']}, blessed {v['blessed']}, "
            f"infra-blessed {v['infra_blessed']}, pushed version {v['pushed_version']}; "
            f"other processes used {found[key]['others_cpu_s']:.1f} CPU s meanwhile")
    for name, title in (("kfp_local_ratio", "default / kfp.local"),
                        ("ratio", "default / floor"),
                        ("kfp_local_floor_ratio", "kfp.local / floor")):
        if name in found:
            text.append(f"{title}: {found[name]:.2f}x wall time, "
                        f"{found['cpu_' + name]:.2f}x CPU time")
    return "\n".join(text)


def ratio_table(sizes: dict[int, dict[str, Any]]) -> str:
    """Per size: wall and CPU seconds of the default runner, kfp.local and the floor, the
    default's ratios to the other two, time per row, the largest process."""
    lines = []
    for rows, found in sorted(sizes.items()):
        runs = [found.get(key, {}) for key, _ in KINDS]
        lines.append([f"{rows:,}", *[r.get("wall_s") for r in runs],
                      *[r.get("cpu_s") for r in runs], found.get("kfp_local_ratio"),
                      found.get("ratio"), found.get("cpu_ratio"),
                      *[_per_row_us(r, rows) for r in runs],
                      *[r.get("max_process_mb") for r in runs]])
    titles = [title for _, title in KINDS]
    return "\n== default runner vs kfp.local vs floor ==\n" + report.table(
        ["rows", *[f"{t} s" for t in titles], *[f"{t} CPU s" for t in titles],
         "default / kfp.local", "default / floor", "CPU default / floor",
         *[f"{t} us/row" for t in titles], *[f"{t} max process MB" for t in titles]], lines)


def growth_table(sizes: dict[int, dict[str, Any]]) -> str:
    """Seconds per task at each size, and the time factor from the first size to the last."""
    ordered = sorted(sizes)
    first, last = ordered[0], ordered[-1]
    series: dict[str, dict[int, float]] = {}
    # Each task's time under the default runner, or under kfp.local when only it ran.
    tasks_of = "pipeline" if any("pipeline" in sizes[n] for n in ordered) else "kfp_local"
    for rows in ordered:
        for task, measured in sizes[rows].get(tasks_of, {}).get("tasks", {}).items():
            series.setdefault(task, {})[rows] = measured["s"]
        for kind in ("pipeline", "kfp_local", "floor"):
            for measure_name, key in (("wall", "wall_s"), ("CPU", "cpu_s")):
                if kind in sizes[rows]:
                    series.setdefault(f"{kind.replace('_', '-')} {measure_name} time", {})[
                        rows] = (
                        sizes[rows][kind][key])
    lines = []
    for name, times in series.items():
        if first in times and last in times:
            time_x = times[last] / times[first]
            lines.append([name, *[times.get(n) for n in ordered], time_x,
                          "yes" if time_x <= last / first else "NO"])
    return (f"\n== growth: seconds at each size; rows grow {last / first:g}x ==\n"
            + report.table(["task", *[f"{n:,} rows" for n in ordered], "time x",
                            "linear or better"], lines))


def memory_table(memory: dict[str, dict[str, dict[str, Any]]], ordered: list[int]) -> str:
    """Peak MB per task at each size, its growth from the first size to the last, its bound."""
    # The default runner's tasks share its process (and the waiting model server): a task's
    # peak is that tree's; a kfp.local task's is its own process's (and its children's).
    titles = {"pipeline": "default, whole tree", "kfp_local": "kfp.local, own process"}
    lines = []
    for kind, tasks in memory.items():
        for task, found in tasks.items():
            if all(mb is None for mb in found["peaks_mb"].values()):
                continue  # shorter than a sample at every size
            bound, within = found["bound_mb"], found["within_bound"]
            lines.append([f"{task} ({titles[kind]})",
                          *[found["peaks_mb"].get(n) for n in ordered], found["growth_mb"],
                          found["growth_x"], bound,
                          None if within is None else "yes" if within else "NO"])
    return (f"\n== memory growth: peak MB at each size; rows grow {ordered[-1] / ordered[0]:g}x =="
            "\n" + report.table(["task (runner)", *[f"{n:,} rows" for n in ordered], "+MB",
                                  "memory x", "bound MB", "within bound"], lines))


def statistics_table(sizes: dict[int, dict[str, Any]]) -> str:
    """Rows/s of the TFDV step and its statistics passes against pyarrow's parse rate."""
    lines = [[f"{rows:,}", s.get("task_rows_per_s"), s.get("floor_step_rows_per_s"),
              s.get("passes"), s.get("pass_rows_per_s"), s.get("pyarrow_parquet_rows_per_s"),
              s.get("pyarrow_over_pass"), s.get("pyarrow_csv_rows_per_s")]
             for rows, s in ((r, f.get("statistics", {})) for r, f in sorted(sizes.items()))]
    return "\n== statistics throughput (rows/s over train + eval) ==\n" + report.table(
        ["rows", "validate-data task", "floor validate step", "stats passes", "one pass",
         "pyarrow Parquet", "pyarrow / one pass", "pyarrow CSV (source)"], lines)


def serving_table(serving: dict[str, Any]) -> str:
    """Latency and throughput per request kind and client count, and the in-process call."""
    in_process = serving["in_process"]
    lines = []
    for kind, label in (("single", "1 row"), ("batch", f"{serving['batch_rows']} rows")):
        call = in_process[kind]
        lines.append([f"in-process, {label}", 1, call["p50_ms"], call["p99_ms"],
                      call["requests_per_s"], call["rows_per_s"], 1.0])
        for clients, found in serving["served"][kind].items():
            lines.append([f"server, {label}", clients, found["p50_ms"], found["p99_ms"],
                          found["requests_per_s"], found["rows_per_s"],
                          found["p99_ms"] / call["p99_ms"]])
    ready = serving["readiness_get"]
    lines.append(["server, readiness GET (no model)", 1, ready["p50_ms"], ready["p99_ms"],
                  ready["requests_per_s"], None, None])
    return (f"\n== serving (server ready in {serving['startup_s']:.1f} s, peak RSS "
            f"{serving['server_peak_mb']:,.0f} MB; other processes used "
            f"{serving['others_cpu_s']:.1f} CPU s meanwhile) ==\n"
            + report.table(["request", "clients", "p50 ms", "p99 ms", "req/s", "rows/s",
                            "p99 / in-process p99"], lines))


def _per_row_us(found: dict[str, Any], rows: int) -> float | None:
    return found["wall_s"] / rows * 1e6 if found else None
