"""The benchmark program (`make bench`): prints a table per section and writes one JSON.

Sections:

- ``pipeline``: one CT iteration of the real pipeline under kfp.local at each size of the
  built-in data: wall time per task and in total, peak memory.
- ``floor``: the same iteration as one plain process calling the same libraries (bench.floor),
  and the ratio of the pipeline to it; time per row as the data grows.
- ``stats``: rows/s of the TFDV step against pyarrow parsing the same files.
- ``serving``: the KServe model server under 1, 4 and 16 concurrent clients, single rows and
  batches, against the in-process SavedModel call.

Every size runs on fresh data and a fresh registry (a cold start); runs never overlap.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import machine, measure, report
from bench.pipeline import MODEL_NAME

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("pipeline", "floor", "stats", "serving")
PARSE_REPEATS = 3


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if not args.serving_python or not Path(args.serving_python).is_file():
        sys.exit(f"--serving-python {args.serving_python!r} does not exist; pass the serving "
                 "environment's python (make sets CTLOOP_SERVING_PYTHON)")
    sections = set(args.only)
    if not sections & {"pipeline", "floor"}:
        sys.exit("--only needs pipeline or floor: the other sections measure their outputs")
    out = args.out or REPO / "bench" / "results" / (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    workdir = args.workdir.resolve()
    result: dict[str, Any] = {
        "started": _now(),
        "code": _code_version(),
        "machine": machine.info(args.serving_python),
        "settings": {"rows": args.rows, "sections": sorted(sections), "clients": args.clients,
                     "requests": args.requests, "batch_rows": args.batch_rows},
        "sizes": {},
    }
    code = result["code"]
    print(f"machine: {machine.describe(result['machine'])}\ncode: {(code['commit'] or '?')[:12]}"
          + (" with uncommitted changes" if code["uncommitted_changes"] else ""))
    sizes: dict[int, dict[str, Any]] = result["sizes"]
    for rows in sorted(args.rows):
        sizes[rows] = run_size(rows, sections, workdir / f"rows-{rows}", args.serving_python)
        print(size_table(rows, sizes[rows]))
        _write(out, result)

    if len(sizes) > 1:
        result["growth"] = growth(sizes)
        print(growth_table(sizes))
    print(ratio_table(sizes))
    if "stats" in sections:
        for rows, found in sizes.items():
            found["statistics"] = statistics(found, workdir / f"rows-{rows}")
        print(statistics_table(sizes))
    if "serving" in sections:
        largest = sizes[max(sizes)]
        trained = largest.get("floor") or largest.get("pipeline")
        _progress("serving: model server and in-process calls")
        from bench import serving

        result["serving"] = serving.measure(
            args.serving_python, trained["model_dir"], trained["eval_path"], MODEL_NAME,
            args.clients, args.requests, args.batch_rows, workdir, REPO)
        print(serving_table(result["serving"]))
    result["targets"] = report.targets(sizes, result.get("serving"))
    print(report.table(["target", "measured", "verdict"],
                       [[t["target"], t["measured"], t["verdict"]] for t in result["targets"]]))
    result["finished"] = _now()
    _write(out, result)
    print(f"\nwrote {out}")


def run_size(rows: int, sections: set[str], size_dir: Path, serving_python: str
             ) -> dict[str, Any]:
    """Generates ``rows`` rows of span 1 and runs the pipeline and the floor on them."""
    from ctloop import datagen

    shutil.rmtree(size_dir, ignore_errors=True)
    (data,) = datagen.write_spans(size_dir / "data", 1, rows=rows)
    found: dict[str, Any] = {"rows": rows, "data_file": str(data)}
    if "pipeline" in sections:
        _progress(f"{rows:,} rows: pipeline under kfp.local")
        child, measured = _child("pipeline", size_dir, serving_python)
        summary, windows = child["summary"], child["windows"]
        run_dir = Path(summary["run_dir"])
        found["pipeline"] = {
            **_process(measured),
            "tasks": {task: {**_window(w, measured), "summary_s": summary["timings_s"][task]}
                      for task, w in windows.items()},
            "in_run_s": summary["timings_s"]["total"],
            "split_rows": summary["rows"],
            "verdicts": {"data_valid": summary["data_valid"], "auc": summary["metrics"]["auc"],
                         "blessed": summary["blessed"], "infra_blessed": summary["infra_blessed"],
                         "pushed_version": summary["pushed_version"]},
            "infra": summary["infra"],
            "train_path": str(run_dir / "ingest" / "train_data"),
            "eval_path": str(run_dir / "ingest" / "eval_data"),
            "model_dir": str(run_dir / "train" / "model"),
        }
    if "floor" in sections:
        _progress(f"{rows:,} rows: floor (one process, same library calls)")
        child, measured = _child("floor", size_dir, serving_python)
        found["floor"] = {
            **_process(measured),
            "steps": {step: _window(w, measured) for step, w in child["windows"].items()},
            "stats_passes_s": child["stats_passes_s"],
            "split_rows": child["rows"],
            "verdicts": {"data_valid": child["data_valid"], "auc": child["auc"],
                         "blessed": child["blessed"], "infra_blessed": child["infra_blessed"],
                         "pushed_version": child["pushed_version"]},
            "infra": child["infra"],
            **{k: child[k] for k in ("train_path", "eval_path", "model_dir")},
        }
    if "pipeline" in found and "floor" in found:
        found["ratio"] = found["pipeline"]["wall_s"] / found["floor"]["wall_s"]
        found["cpu_ratio"] = found["pipeline"]["cpu_s"] / found["floor"]["cpu_s"]
    return found


def statistics(found: dict[str, Any], size_dir: Path) -> dict[str, Any]:
    """Rows/s of the TFDV step (pipeline task, floor step, one statistics pass) and of pyarrow
    alone parsing the same files: the Parquet splits TFDV reads, and the CSV ingest reads."""
    import pyarrow.csv
    import pyarrow.parquet

    source = found.get("floor") or found["pipeline"]
    split_rows = sum(source["split_rows"].values())
    stats: dict[str, Any] = {"split_rows": split_rows}
    if "pipeline" in found:
        stats["task_rows_per_s"] = split_rows / found["pipeline"]["tasks"]["validate-data"]["s"]
    if "floor" in found:
        passes = found["floor"]["stats_passes_s"]
        stats["floor_step_rows_per_s"] = (
            split_rows / found["floor"]["steps"]["validate-data"]["s"])
        stats["passes"] = len(passes)
        stats["pass_rows_per_s"] = split_rows / (sum(passes) / len(passes))
    stats["pyarrow_parquet_rows_per_s"] = split_rows / _best_time(lambda: [
        pyarrow.parquet.read_table(source[k]) for k in ("train_path", "eval_path")])
    stats["pyarrow_csv_rows_per_s"] = found["rows"] / _best_time(
        lambda: pyarrow.csv.read_csv(found["data_file"]))
    if "pass_rows_per_s" in stats:
        stats["pyarrow_over_pass"] = stats["pyarrow_parquet_rows_per_s"] / stats["pass_rows_per_s"]
    return stats


def growth(sizes: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Growth steps of the pipeline's and the floor's wall time, and of each task's."""
    found: dict[str, Any] = {}
    for kind in ("pipeline", "floor"):
        times = {n: r[kind]["wall_s"] for n, r in sizes.items() if kind in r}
        if len(times) > 1:
            found[kind] = report.growth(times)
    tasks = {n: r["pipeline"]["tasks"] for n, r in sizes.items() if "pipeline" in r}
    if len(tasks) > 1:
        found["pipeline_tasks"] = {
            task: report.growth({n: t[task]["s"] for n, t in tasks.items()})
            for task in next(iter(tasks.values()))}
    return found


def size_table(rows: int, found: dict[str, Any]) -> str:
    """Per task: pipeline and floor wall and CPU seconds, disk reads, and peak memory."""
    pipeline, floor = found.get("pipeline", {}), found.get("floor", {})
    tasks, steps = pipeline.get("tasks", {}), floor.get("steps", {})
    lines = []
    for name in dict.fromkeys(["imports", *tasks, *steps]):
        task, step = tasks.get(name, {}), steps.get(name, {})
        lines.append([name, task.get("s"), step.get("s"),
                      task["s"] - step["s"] if task and step else None,
                      task.get("cpu_s"), step.get("cpu_s"), task.get("read_mb"),
                      step.get("read_mb"), task.get("peak_tree_mb"), step.get("peak_tree_mb")])
    # What the steps do not cover: interpreter start and exit; for the pipeline also the
    # driver's kfp import, the pipeline's compilation and the hand-offs between tasks.
    keys = (("wall_s", "s"), ("cpu_s", "cpu_s"), ("read_mb", "read_mb"))
    outside = {kind: {key: whole[key] - sum(p[part_key] for p in parts.values())
                      for key, part_key in keys}
               for kind, whole, parts in (("pipeline", pipeline, tasks), ("floor", floor, steps))
               if whole}
    both = pipeline and floor
    for name, found_kind in (("outside the steps", outside),
                             ("process (whole run)", {"pipeline": pipeline, "floor": floor})):
        p, f = found_kind.get("pipeline") or {}, found_kind.get("floor") or {}
        lines.append([name, p.get("wall_s"), f.get("wall_s"),
                      p["wall_s"] - f["wall_s"] if both else None, p.get("cpu_s"),
                      f.get("cpu_s"), p.get("read_mb"), f.get("read_mb"),
                      p.get("peak_tree_mb"), f.get("peak_tree_mb")])
    split = (pipeline or floor).get("split_rows", {})
    text = [f"\n== {rows:,} rows ({split.get('train', 0):,} train / {split.get('eval', 0):,} "
            "eval) ==",
            report.table(["task", "pipeline s", "floor s", "pipeline - floor s",
                          "pipeline CPU s", "floor CPU s", "pipeline disk read MB",
                          "floor disk read MB", "pipeline peak MB", "floor peak MB"], lines)]
    for kind, whole in (("pipeline", pipeline), ("floor", floor)):
        if whole:
            v = whole["verdicts"]
            text.append(
                f"{kind}: largest process {whole['max_process_mb']:,.0f} MB; auc "
                f"{v['auc']:.4f}, data valid {v['data_valid']}, blessed {v['blessed']}, "
                f"infra-blessed {v['infra_blessed']}, pushed version {v['pushed_version']}; "
                f"other processes used {whole['others_cpu_s']:.1f} CPU s meanwhile")
    if "ratio" in found:
        text.append(f"pipeline / floor: {found['ratio']:.2f}x wall time, "
                    f"{found['cpu_ratio']:.2f}x CPU time")
    return "\n".join(text)


def ratio_table(sizes: dict[int, dict[str, Any]]) -> str:
    """Per size: pipeline and floor wall time, their ratios (wall and CPU), time per row, the
    largest process."""
    lines = []
    for rows, found in sorted(sizes.items()):
        pipeline, floor = found.get("pipeline", {}), found.get("floor", {})
        lines.append([f"{rows:,}", pipeline.get("wall_s"), floor.get("wall_s"),
                      found.get("ratio"), found.get("cpu_ratio"), _per_row_us(pipeline, rows),
                      _per_row_us(floor, rows), pipeline.get("max_process_mb"),
                      floor.get("max_process_mb")])
    return "\n== pipeline vs floor ==\n" + report.table(
        ["rows", "pipeline s", "floor s", "ratio", "CPU ratio", "pipeline us/row",
         "floor us/row",
         "pipeline max process MB", "floor max process MB"], lines)


def growth_table(sizes: dict[int, dict[str, Any]]) -> str:
    """Seconds per task at each size, and the time factor from the first size to the last."""
    ordered = sorted(sizes)
    first, last = ordered[0], ordered[-1]
    series: dict[str, dict[int, float]] = {}
    for rows in ordered:
        for task, measured in sizes[rows].get("pipeline", {}).get("tasks", {}).items():
            series.setdefault(task, {})[rows] = measured["s"]
        for kind in ("pipeline", "floor"):
            for measure_name, key in (("wall", "wall_s"), ("CPU", "cpu_s")):
                if kind in sizes[rows]:
                    series.setdefault(f"{kind} {measure_name} time", {})[rows] = (
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


def _child(kind: str, size_dir: Path, serving_python: str
           ) -> tuple[dict[str, Any], measure.Measured]:
    """Runs ``bench.<kind>`` on the size's data in a fresh folder; returns its JSON and
    measurements."""
    workdir = size_dir / kind
    workdir.mkdir(parents=True)
    out = workdir / "result.json"
    command = [sys.executable, "-m", f"bench.{kind}", "--data", str(size_dir / "data"),
               "--workdir", str(workdir), "--serving-python", serving_python, "--out", str(out)]
    measured = measure.run(command, workdir / "child.log", REPO)
    if measured.returncode != 0:
        tail = (workdir / "child.log").read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"bench.{kind} failed with exit code {measured.returncode} (logs in "
                 f"{workdir}):\n" + "\n".join(tail))
    return json.loads(out.read_text()), measured


def _process(measured: measure.Measured) -> dict[str, Any]:
    return {"wall_s": measured.wall_s, "cpu_s": measured.cpu_s,
            "others_cpu_s": measured.others_cpu_s, "read_mb": measured.disk_read_mb,
            "max_process_mb": measured.max_process_mb, "peak_tree_mb": measured.peak_tree_mb,
            "load_avg": measured.load_avg}


def _window(window: dict[str, float], measured: measure.Measured) -> dict[str, Any]:
    return {"s": window["end"] - window["start"], "cpu_s": window["cpu_s"],
            "read_mb": window["read_mb"],
            "peak_tree_mb": measured.peak_between(window["start"], window["end"])}


def _per_row_us(found: dict[str, Any], rows: int) -> float | None:
    return found["wall_s"] / rows * 1e6 if found else None


def _best_time(work) -> float:
    times = []
    for _ in range(PARSE_REPEATS):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether the work tree differed from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"),
                "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "uncommitted_changes": None}  # not a git checkout


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _write(out: Path, result: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="Data sizes (rows of span 1) [default: %(default)s].")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="Sections to run, with pipeline or floor among them [default: all].")
    parser.add_argument("--out", type=Path,
                        help="The JSON to write [default: bench/results/<UTC time>.json].")
    parser.add_argument("--workdir", type=Path, default=Path("work/bench"),
                        help="Data and run outputs, one folder per size, replaced on each run "
                        "[default: %(default)s].")
    parser.add_argument("--serving-python", default=os.environ.get("CTLOOP_SERVING_PYTHON"),
                        help="The serving environment's python [default: $CTLOOP_SERVING_PYTHON].")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16],
                        help="Concurrent clients of the model server [default: %(default)s].")
    parser.add_argument("--requests", type=int, default=400,
                        help="Requests per request kind and client count [default: %(default)s].")
    parser.add_argument("--batch-rows", type=int, default=64,
                        help="Rows per batch request [default: %(default)s].")
    return parser


if __name__ == "__main__":
    main()
