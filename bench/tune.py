"""The ``tune`` section of the benchmark: the hyperparameter search's cost per trial and the
speed-up of running its trials in parallel worker processes.

The same search (the same trials: the same space, seed and count) runs with 1 worker (every trial
in this process) and with 2 (two spawned processes, each TensorFlow limited to one core's
threads), on the built-in data prepared as the pipeline prepares it (ingest, validate_data).
The parallel wall time includes the workers' start (a TensorFlow import each) and waiting for
the slower trial of each pair.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import report

LABEL, EXCLUDE = "churned", ["customer_id"]
SPACE = {"learning_rate": {"low": 0.0005, "high": 0.05, "log": True},
         "hidden_units": {"choices": [[64, 32], [32], [128, 64]]}}
WORKERS = (1, 2)


def measure(workdir: Path, rows: int, trials: int, epochs: int) -> dict[str, Any]:
    """Prepares ``rows`` rows of span 1 and runs the search with each of ``WORKERS``."""
    from ctloop.components.ingest import logic as ingest
    from ctloop.components.select_span import logic as select_span
    from ctloop.components.tune import logic
    from ctloop.components.validate_data import logic as validate
    from ctloop.data import datagen
    from ctloop.settings import Hyperparameters

    shutil.rmtree(workdir, ignore_errors=True)
    datagen.write_spans(workdir / "data", 1, rows=rows)
    selected = select_span.run(str(workdir / "data" / "span-1"))
    train, evaluation = workdir / "train.parquet", workdir / "eval.parquet"
    ingest.run(selected.files, selected.fingerprint, selected.spans, LABEL, EXCLUDE, 20,
               str(train), str(evaluation))
    out = workdir / "validation"
    out.mkdir(parents=True)
    validate.run(str(train), str(evaluation), 1, LABEL, EXCLUDE, None, None, None,
                 validate.OutputPaths(str(out / "stats"), str(out / "schema.pbtxt"),
                                      str(out / "anomalies"), str(out / "stats.html"),
                                      str(out / "drift.html"), str(out / "anomalies.md")))
    found: dict[str, Any] = {"rows": rows, "trials": trials, "epochs": epochs,
                             "cores": len(os.sched_getaffinity(0)), "runs": {}}
    for workers in WORKERS:
        _progress(f"tune: {trials} trials, {workers} worker(s)")
        cpu = _cpu_s()
        load = os.getloadavg()[0]
        started = time.monotonic()
        search = logic.search(str(train), str(out / "schema.pbtxt"), LABEL, EXCLUDE, "binary",
                              None, Hyperparameters(epochs=epochs), SPACE, trials, 3600.0,
                              workers, 20, log=lambda line: _progress(line))
        wall = time.monotonic() - started
        seconds = [t["seconds"] for t in search.trials]
        found["runs"][workers] = {
            "wall_s": wall, "cpu_s": _cpu_s() - cpu, "load_before": load,
            "trial_s_mean": sum(seconds) / len(seconds), "trial_s_max": max(seconds),
            "wall_per_trial_s": wall / len(seconds), "trials_run": len(seconds),
            "values": [t["value"] for t in search.trials], "verdict": search.verdict()}
    one, two = (found["runs"][w] for w in WORKERS)
    found["speedup"] = one["wall_s"] / two["wall_s"]
    # Trial 0 (the configured hyperparameters) is the same trial in both: seeded, same value.
    found["same_configured_value"] = one["values"][0] == two["values"][0]
    return found


def table(found: dict[str, Any]) -> str:
    lines = [[f"{w} worker(s)", r["trials_run"], r["wall_s"], r["wall_per_trial_s"],
              r["trial_s_mean"], r["trial_s_max"], r["cpu_s"], r["load_before"]]
             for w, r in found["runs"].items()]
    return (f"\n== tune: {found['trials']} trials of {found['epochs']} epochs on "
            f"{found['rows']:,} rows, {found['cores']} cores; speed-up of 2 workers "
            f"{found['speedup']:.2f}x; configured trial equal in both: "
            f"{found['same_configured_value']} ==\n"
            + report.table(["search", "trials", "wall s", "wall s / trial", "trial s (mean)",
                            "trial s (max)", "CPU s", "load avg before"], lines))


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, once shut down
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
