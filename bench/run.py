"""The benchmark program (`make bench`): prints a table per section and writes one JSON.

Sections:

- ``pipeline``: one CT iteration of the real pipeline as ``ctloop run`` runs it by default (the
  in-process runner) at each size of the built-in data: wall and CPU time per task and in
  total, peak memory.
- ``kfp-local``: the same pipeline with kfp.local's SubprocessRunner (``--runner kfp-local``):
  each task a process of its own.
- ``floor``: the same iteration as one plain process calling the same libraries (bench.floor),
  and the ratios of the runners to it and to each other; time per row as the data grows.
- ``stats``: rows/s of the TFDV step against pyarrow parsing the same files.
- ``serving``: the KServe model server under 1, 4 and 16 concurrent clients, single rows and
  batches, against the in-process SavedModel call.
- ``tune``: the hyperparameter search's cost per trial and the speed-up of 2 worker processes
  over 1 (bench.tune); it prepares its own data, so it also runs alone.
- ``beam``: TFDV statistics and TFMA evaluation at one size (``--beam-rows``) with one Beam worker
  (in-process) and with two worker processes (bench.beam); it prepares its own data, so it also
  runs alone.

With more than one size, the growth tables show each task's time and peak memory at each size;
the peaks of kfp.local's tasks (a process each, as a pod each on a cluster) are judged against
per-task bounds (bench.report.MEMORY_BOUNDS_MB). Larger sizes, e.g. memory up to 3M rows:
``--rows 100000 1000000 3000000 --only kfp-local``.

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

from bench import machine, measure, report, tables
from bench.pipeline import MODEL_NAME

REPO = Path(__file__).resolve().parent.parent
SECTIONS = ("pipeline", "kfp-local", "floor", "stats", "serving", "tune", "beam")
PARSE_REPEATS = 3


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if not args.serving_python or not Path(args.serving_python).is_file():
        sys.exit(f"--serving-python {args.serving_python!r} does not exist; pass the serving "
                 "environment's python (make sets CTLOOP_SERVING_PYTHON)")
    sections = set(args.only)
    if not sections & {"pipeline", "kfp-local", "floor", "tune", "beam"}:
        sys.exit("--only needs pipeline, kfp-local, floor, tune or beam: the other sections "
                 "measure their outputs")
    out = args.out or REPO / "bench" / "results" / (
        datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ".json")
    workdir = args.workdir.resolve()
    result: dict[str, Any] = {
        "started": _now(),
        "code": _code_version(),
        "machine": machine.info(args.serving_python),
        "settings": {"rows": args.rows, "sections": sorted(sections), "clients": args.clients,
                     "requests": args.requests, "batch_rows": args.batch_rows,
                     "beam_rows": args.beam_rows},
        "sizes": {},
    }
    code = result["code"]
    print(f"machine: {machine.describe(result['machine'])}\ncode: {(code['commit'] or '?')[:12]}"
          + (" with uncommitted changes" if code["uncommitted_changes"] else ""))
    if "tune" in sections:
        from bench import tune

        result["tune"] = tune.measure(workdir / "tune", args.tune_rows, args.tune_trials,
                                      args.tune_epochs)
        print(tune.table(result["tune"]))
        _write(out, result)
    if "beam" in sections:
        from bench import beam

        result["beam"] = beam.measure_workers(workdir / "beam", args.beam_rows)
        print(beam.table(result["beam"]))
        _write(out, result)
    if not sections & {"pipeline", "kfp-local", "floor"}:
        result["finished"] = _now()
        _write(out, result)
        print(f"\nwrote {out}")
        return
    sizes: dict[int, dict[str, Any]] = result["sizes"]
    for rows in sorted(args.rows):
        sizes[rows] = run_size(rows, sections, workdir / f"rows-{rows}", args.serving_python)
        print(tables.size_table(rows, sizes[rows]))
        _write(out, result)

    if len(sizes) > 1:
        result["growth"] = growth(sizes)
        print(tables.growth_table(sizes))
        result["memory"] = report.memory(sizes)
        print(tables.memory_table(result["memory"], sorted(sizes)))
    print(tables.ratio_table(sizes))
    if "stats" in sections:
        for rows, found in sizes.items():
            found["statistics"] = statistics(found, workdir / f"rows-{rows}")
        print(tables.statistics_table(sizes))
    if "serving" in sections:
        largest = sizes[max(sizes)]
        trained = largest.get("floor") or largest.get("pipeline") or largest["kfp_local"]
        _progress("serving: model server and in-process calls")
        from bench import serving

        result["serving"] = serving.measure(
            args.serving_python, trained["model_dir"], trained["eval_path"], MODEL_NAME,
            args.clients, args.requests, args.batch_rows, workdir, REPO)
        print(tables.serving_table(result["serving"]))
    result["targets"] = report.targets(sizes, result.get("serving")) + report.memory_targets(
        result.get("memory") or report.memory(sizes))
    print(report.table(["target", "measured", "verdict"],
                       [[t["target"], t["measured"], t["verdict"]] for t in result["targets"]]))
    result["finished"] = _now()
    _write(out, result)
    print(f"\nwrote {out}")


def run_size(rows: int, sections: set[str], size_dir: Path, serving_python: str
             ) -> dict[str, Any]:
    """Generates ``rows`` rows of span 1 and runs the pipeline and the floor on them."""
    from ctloop.data import datagen

    shutil.rmtree(size_dir, ignore_errors=True)
    (data,) = datagen.write_spans(size_dir / "data", 1, rows=rows)
    found: dict[str, Any] = {"rows": rows, "data_file": str(data)}
    for key, title, runner in (("pipeline", "default (in-process)", "in-process"),
                               ("kfp_local", "kfp.local", "kfp-local")):
        if key.replace("_", "-") not in sections:
            continue
        _progress(f"{rows:,} rows: pipeline, {title} runner")
        child, measured = _child("pipeline", size_dir, serving_python, runner)
        summary, windows = child["summary"], child["windows"]
        run_dir = Path(summary["run_dir"])
        found[key] = {
            **_process(measured),
            "runner": runner,
            "tasks": {task: {**_window(w, measured, own_mb=runner == "kfp-local"),
                             "summary_s": summary["timings_s"][task]}
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
    for name, over in (("ratio", "floor"), ("kfp_local_ratio", "kfp_local"),
                       ("kfp_local_floor_ratio", "floor")):
        mine = "kfp_local" if name == "kfp_local_floor_ratio" else "pipeline"
        if mine in found and over in found:
            found[name] = found[mine]["wall_s"] / found[over]["wall_s"]
            found["cpu_" + name] = found[mine]["cpu_s"] / found[over]["cpu_s"]
    return found


def statistics(found: dict[str, Any], size_dir: Path) -> dict[str, Any]:
    """Rows/s of the TFDV step (pipeline task, floor step, one statistics pass) and of pyarrow
    alone parsing the same files: the Parquet splits TFDV reads, and the CSV ingest reads."""
    import pyarrow.csv
    import pyarrow.parquet

    source = found.get("floor") or found.get("pipeline") or found["kfp_local"]
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
    for kind in ("pipeline", "kfp_local", "floor"):
        times = {n: r[kind]["wall_s"] for n, r in sizes.items() if kind in r}
        if len(times) > 1:
            found[kind] = report.growth(times)
    tasks = {n: r["pipeline"]["tasks"] for n, r in sizes.items() if "pipeline" in r}
    if len(tasks) > 1:
        found["pipeline_tasks"] = {
            task: report.growth({n: t[task]["s"] for n, t in tasks.items()})
            for task in next(iter(tasks.values()))}
    return found


def _child(kind: str, size_dir: Path, serving_python: str, runner: str | None = None
           ) -> tuple[dict[str, Any], measure.Measured]:
    """Runs ``bench.<kind>`` (with ``runner``, for the pipeline) on the size's data in a fresh
    folder; returns its JSON and measurements."""
    workdir = size_dir / (f"{kind}-{runner}" if runner else kind)
    workdir.mkdir(parents=True)
    out = workdir / "result.json"
    command = [sys.executable, "-m", f"bench.{kind}", "--data", str(size_dir / "data"),
               "--workdir", str(workdir), "--serving-python", serving_python, "--out", str(out),
               *(["--runner", runner] if runner else [])]
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


def _window(window: dict[str, float], measured: measure.Measured, own_mb: bool = False
            ) -> dict[str, Any]:
    """A step's time, CPU, disk reads and peak tree memory; with ``own_mb`` (kfp.local, where
    the task is a process of its own) also ``task_peak_mb``: the tree without the driver."""
    start, end = window["start"], window["end"]
    found = {"s": end - start, "cpu_s": window["cpu_s"], "read_mb": window["read_mb"],
             "peak_tree_mb": measured.peak_between(start, end)}
    if own_mb:
        found["task_peak_mb"] = measured.peak_between(start, end, descendants_only=True)
    return found


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
                        help="Sections to run, with pipeline, kfp-local or floor among them "
                        "[default: all].")
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
    parser.add_argument("--tune-rows", type=int, default=50_000,
                        help="tune: rows of the search's data [default: %(default)s].")
    parser.add_argument("--tune-trials", type=int, default=8,
                        help="tune: trials per search [default: %(default)s].")
    parser.add_argument("--tune-epochs", type=int, default=10,
                        help="tune: epochs per trial [default: %(default)s].")
    parser.add_argument("--beam-rows", type=int, default=1_000_000,
                        help="beam: rows of span 1 for the workers comparison "
                        "[default: %(default)s].")
    return parser


if __name__ == "__main__":
    main()
