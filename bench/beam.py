"""The ``beam`` section of the benchmark: TFDV statistics and TFMA evaluation with one Beam worker
(the in-process FnApiRunner, the default) against two worker processes
(``--direct_num_workers=2 --direct_running_mode=multi_processing``).

The parent prepares ``rows`` rows of span 1 once, as the pipeline does: ingest's part-file
splits, a schema (validate_data), and a model trained for one epoch (evaluation's cost depends on
the model's shape and the eval rows, not on how well it was trained). Each variant then runs in a
fresh measured child process (``python -m bench.beam``) that calls the component logic itself:
``validate_data.generate_statistics`` over both splits, or ``evaluate.run`` (no baseline, the
default thresholds) on the eval split, with the Beam options of the variant. The child imports
Beam, TensorFlow, TFDV and TFMA first, then times the call (the workers' own imports are in that
time); the parent measures the child's process tree, the workers included (wall, CPU, peak MB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import measure, report
from bench.pipeline import EXCLUDE, LABEL

REPO = Path(__file__).resolve().parent.parent
STEPS = ("statistics", "evaluate")
# Workers -> the Beam options of that variant (none: beam_options.resolve's in-process runner).
VARIANTS = {1: [], 2: ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]}
EVAL_PERCENT = 20  # ct_pipeline's default


def measure_workers(workdir: Path, rows: int) -> dict[str, Any]:
    """Prepares ``rows`` rows and runs each step with each of ``VARIANTS`` in a child."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    _progress(f"beam: preparing {rows:,} rows (splits, schema, a one-epoch model)")
    prepared = _run_child(["prepare", "--workdir", str(workdir), "--rows", str(rows)],
                          workdir / "prepare")
    found: dict[str, Any] = {"rows": rows, "split_rows": prepared["child"]["split_rows"],
                             "prepare_s": prepared["wall_s"], "runs": {}}
    for step in STEPS:
        found["runs"][step] = {}
        for workers in VARIANTS:
            _progress(f"beam: {step}, {workers} worker(s)")
            found["runs"][step][workers] = _run_child(
                [step, "--workdir", str(workdir), "--workers", str(workers)],
                workdir / f"{step}-{workers}")
        one, two = (found["runs"][step][w]["child"]["step_s"] for w in VARIANTS)
        found["runs"][step]["speedup"] = one / two
    return found


def table(found: dict[str, Any]) -> str:
    """Per step and worker count: the step's time, its process tree's wall, CPU and peak MB."""
    lines = []
    for step, runs in found["runs"].items():
        first = runs[min(VARIANTS)]["child"]["step_s"]
        for workers in VARIANTS:
            run = runs[workers]
            child = run["child"]
            lines.append([step, workers, child["beam"]["running_mode"] or "in-process",
                          child["rows"], child["step_s"], child["rows"] / child["step_s"],
                          first / child["step_s"], run["wall_s"], run["cpu_s"],
                          run["peak_tree_mb"], run["others_cpu_s"]])
    split = found["split_rows"]
    return (f"\n== beam workers: {found['rows']:,} rows ({split['train']:,} train / "
            f"{split['eval']:,} eval), each variant a fresh process ==\n"
            + report.table(["step", "workers", "mode", "rows", "step s", "rows/s",
                            "speed-up", "process s", "CPU s", "peak tree MB",
                            "other CPU s"], lines))


def _run_child(args: list[str], child_dir: Path) -> dict[str, Any]:
    child_dir.mkdir(parents=True)
    out = child_dir / "result.json"
    measured = measure.run([sys.executable, "-m", "bench.beam", *args, "--out", str(out)],
                           child_dir / "child.log", REPO)
    if measured.returncode != 0:
        tail = (child_dir / "child.log").read_text(errors="replace").splitlines()[-15:]
        sys.exit(f"bench.beam {args[0]} failed with exit code {measured.returncode} (logs in "
                 f"{child_dir}):\n" + "\n".join(tail))
    return {"wall_s": measured.wall_s, "cpu_s": measured.cpu_s,
            "others_cpu_s": measured.others_cpu_s, "peak_tree_mb": measured.peak_tree_mb,
            "max_process_mb": measured.max_process_mb, "load_avg": measured.load_avg,
            "child": json.loads(out.read_text())}


def _paths(workdir: Path) -> dict[str, Path]:
    return {"data": workdir / "data", "train": workdir / "train", "eval": workdir / "eval",
            "schema": workdir / "schema" / "schema.pbtxt", "model": workdir / "model"}


def _prepare(workdir: Path, rows: int) -> dict[str, Any]:
    from ctloop.components.ingest import logic as ingest
    from ctloop.components.select_span import logic as select_span
    from ctloop.components.train import logic as train
    from ctloop.components.validate_data import logic as validate
    from ctloop.data import datagen
    from ctloop.settings import Hyperparameters

    paths = _paths(workdir)
    datagen.write_spans(paths["data"], 1, rows=rows)
    selected = select_span.run(str(paths["data"] / "span-1"))
    ingested = ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE,
                          EVAL_PERCENT, str(paths["train"]), str(paths["eval"]))
    out = workdir / "validation"
    validate.run(str(paths["train"]), str(paths["eval"]), 1, LABEL, EXCLUDE, None, None, None,
                 validate.OutputPaths(str(out / "stats"), str(paths["schema"]),
                                      str(out / "anomalies"), str(out / "stats.html"),
                                      str(out / "drift.html"), str(out / "anomalies.md")))
    train.run(str(paths["train"]), str(paths["eval"]), str(paths["schema"]), LABEL, EXCLUDE,
              Hyperparameters(epochs=1), str(paths["model"]), ingested.label_classes)
    return {"split_rows": {"train": ingested.train_rows, "eval": ingested.eval_rows}}


def _step(step: str, workdir: Path, workers: int) -> dict[str, Any]:
    """Runs one step's component logic with the variant's Beam options; times the call."""
    from ctloop import beam_options
    from ctloop.components.evaluate import logic as evaluate
    from ctloop.components.validate_data import logic as validate
    from ctloop.data import splits

    started = time.perf_counter()
    # Imported before the timed call, as a pipeline task's process has them by then; the
    # workers of the multi-process mode import them again, in the time measured.
    import apache_beam  # noqa: F401
    import tensorflow  # noqa: F401
    import tensorflow_data_validation  # noqa: F401
    import tensorflow_model_analysis  # noqa: F401
    from tfx_bsl.tfxio import parquet_tfxio  # noqa: F401

    imports_s = time.perf_counter() - started
    paths = _paths(workdir)
    args = beam_options.resolve(VARIANTS[workers])
    run_dir = workdir / f"{step}-{workers}" / "output"
    if step == "statistics":
        both = {"train": str(paths["train"]), "eval": str(paths["eval"])}
        rows = sum(splits.rows(p) for p in both.values())
        started = time.perf_counter()
        validate.generate_statistics(both, str(run_dir), args, exclude=EXCLUDE)
        step_s = time.perf_counter() - started
    else:
        rows = splits.rows(str(paths["eval"]))
        started = time.perf_counter()
        evaluation = evaluate.run(str(paths["model"]), str(paths["eval"]), LABEL, None,
                                  evaluate.Thresholds(), str(run_dir), beam_pipeline_args=args)
        step_s = time.perf_counter() - started
        if evaluation.metrics.get("auc") is None:
            sys.exit(f"evaluate with {workers} worker(s) computed no auc: {evaluation.metrics}")
    return {"step": step, "workers": workers, "rows": rows, "step_s": step_s,
            "imports_s": imports_s,
            "beam": beam_options.describe(args)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.beam", description=__doc__)
    parser.add_argument("what", choices=["prepare", *STEPS])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="The JSON to write.")
    parser.add_argument("--rows", type=int, help="prepare: rows of span 1.")
    parser.add_argument("--workers", type=int, choices=sorted(VARIANTS),
                        help="statistics, evaluate: Beam workers.")
    args = parser.parse_args()
    if args.what == "prepare":
        found = _prepare(args.workdir, args.rows)
    else:
        found = _step(args.what, args.workdir, args.workers)
    args.out.write_text(json.dumps(found, indent=2))


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
