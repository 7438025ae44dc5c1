"""One self-contained HTML page per run (``ctloop report``): the decisions and their reasons, the
data and its anomalies, drift and skew per feature, candidate vs baseline, ROC and confusion
matrix, infra latency, and links to the TFDV and evaluation views.

Everything is read from the run's folder (each task's ``executor_output.json`` and reports, see
``local_run``); the page carries its styles and charts (inline SVG) and loads nothing, so it opens
anywhere, offline. A small script marks the page once its charts have a size, which is what the
browser test checks.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from ctloop.errors import ConfigError
from ctloop.local import runs

REPORT_FILE = "report.html"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.b{display:inline-block;padding:.15em .6em;margin-right:.4em;border-radius:.8em;font-weight:600}
.yes{background:#dcf5dc;color:#185c18}.no{background:#fadcdc;color:#8a1414}.na{background:#eee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:12px;white-space:pre-wrap}
svg text{font:11px system-ui,sans-serif}
"""

# Marks the page rendered: the number of charts the browser gave a size.
_SCRIPT = """
window.addEventListener("load", function () {
  var sized = Array.prototype.filter.call(document.querySelectorAll("svg.chart"),
    function (svg) {
      var box = svg.getBoundingClientRect();
      return box.width > 0 && box.height > 0;
    });
  document.body.setAttribute("data-charts-rendered", String(sized.length));
});
"""


def find_run(path: str | Path) -> Path:
    """A run's folder: ``path`` itself, or the latest run of the workdir ``path``.

    Raises:
        ConfigError: ``path`` is neither.
    """
    path = Path(path)
    if (path / "select-span").is_dir():
        return path
    root = path / "pipeline_root"
    found = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not found:
        raise ConfigError(f"{path} is neither a run's folder nor a workdir with runs; pass a "
                          "--workdir of `ctloop run` or one of its pipeline_root/ folders")
    return found[-1]


def write(run_dir: Path, output: Path | None = None) -> Path:
    """Writes the run's page (default: ``<run_dir>/report.html``); returns its path."""
    output = Path(output) if output else run_dir / REPORT_FILE
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(run_dir, output.parent))
    return output


def render(run_dir: Path, links_from: Path) -> str:
    """The page's HTML; links to the run's files are relative to ``links_from``."""
    outputs = {task: runs.task_outputs(run_dir, task) for task in _tasks()}
    row = runs.run_row(run_dir)
    blessing = runs.artifact_metadata(outputs["evaluate"], "blessing")
    infra = runs.artifact_metadata(outputs["infra-validate"], "infra_blessing")
    pushed = runs.artifact_metadata(outputs["rollout"], "pushed_model")
    parts = [
        f"<h1>ctloop run {_e(row['time'])}, span {_e(row['span'])}</h1>",
        "<p>" + "".join(_badge(name, row[key]) for name, key in (
            ("data valid", "data valid"), ("blessed", "blessed"), ("infra-blessed", "infra"),
        )) + _badge(f"pushed {row['pushed']}" if row["pushed"] != "-" else "pushed",
                    "yes" if row["pushed"] != "-" else "NO") + "</p>",
        f"<p><b>Outcome:</b> {_e(row['outcome'])}</p>",
        f"<p><b>Judged against:</b> {_e(_judged_against(row['baseline']))}</p>",
        "<h2>Decision and reasons</h2>",
        _decisions(blessing, infra, pushed),
        "<h2>Data</h2>",
        _data(outputs, run_dir, links_from),
        "<h2>Drift and skew per feature</h2>",
        _drift(runs.artifact_metadata(outputs["validate-data"], "drift_metrics")),
        "<h2>Candidate vs baseline</h2>",
        _metrics(blessing),
        _classification(runs.artifact_metadata(outputs["evaluate"], "classification_metrics")),
        "<h2>Infra validation</h2>",
        _infra(infra),
        "<h2>Evaluation report</h2>",
        _text(run_dir / "evaluate" / "report", "the evaluation report (metrics per slice)"),
        "<h2>Views</h2>",
        _links(run_dir, links_from),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>ctloop run {_e(row['time'])}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{''.join(parts)}\n<script>{_SCRIPT}</script>\n</body></html>\n")


def _tasks() -> tuple[str, ...]:
    from ctloop.local.runner import TASKS

    return TASKS


def _e(value: Any) -> str:
    return html.escape(str(value))


def _badge(name: str, value: str) -> str:
    kind = {"yes": "yes", "NO": "no"}.get(value, "na")
    mark = {"yes": "✓", "NO": "✗"}.get(value, "–")
    return f'<span class="b {kind}">{mark} {_e(name)}</span>'


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f'<td class="n">{value:.4f}</td>'
        return f"<td>{_e(value)}</td>"

    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _decisions(blessing: dict, infra: dict, pushed: dict) -> str:
    if not blessing:
        return "<p>No evaluation: the run ended before it.</p>"
    parts = [f"<p><b>Blessing:</b> {_e(blessing.get('reason', '-'))}</p>"]
    checks = blessing.get("checks") or []
    if checks:
        parts.append(_table(["check", "threshold", "value", "passed"], [
            [c.get("metric"), c.get("threshold"), c.get("value"), "yes" if c.get("passed")
             else "NO"] for c in checks]))
    if infra:
        parts.append(f"<p><b>Infra:</b> {_e(infra.get('reason', '-'))}</p>")
    if pushed:
        parts.append(f"<p><b>Rollout:</b> {_e(pushed.get('reason', '-'))}</p>")
    return "".join(parts)


def _data(outputs: dict, run_dir: Path, links_from: Path) -> str:
    train = runs.artifact_metadata(outputs["ingest"], "train_data")
    evaluation = runs.artifact_metadata(outputs["ingest"], "eval_data")
    anomalies = runs.artifact_metadata(outputs["validate-data"], "anomalies")
    schema = runs.artifact_metadata(outputs["validate-data"], "schema")
    rows = [["train rows", str(int(train["rows"])) if "rows" in train else "-"],
            ["eval rows", str(int(evaluation["rows"])) if "rows" in evaluation else "-"],
            ["anomalies", str(int(anomalies.get("anomaly_count", 0))) if anomalies else "-"],
            ["blocking", str(int(anomalies.get("blocking_count", 0))) if anomalies else "-"],
            ["schema", schema.get("source", "-")]]
    return _table(["", ""], rows) + _text(run_dir / "validate-data" / "anomalies_report",
                                       "the data validation report (anomalies, every measure)")


def _drift(distances: dict[str, float]) -> str:
    features = sorted({key.split(".", 1)[1] for key in distances if "." in key})
    if not features:
        return "<p>Not measured.</p>"
    bar_h, gap, left, width = 9, 8, 150, 380
    top = max([distances.get(f"{k}.{f}", 0.0) for f in features for k in ("drift", "skew")]
              + [0.05])
    height = len(features) * (2 * bar_h + gap) + 30
    shapes = []
    for i, feature in enumerate(features):
        y = 20 + i * (2 * bar_h + gap)
        shapes.append(f'<text x="{left - 6}" y="{y + bar_h + 3}" text-anchor="end">'
                      f"{_e(feature)}</text>")
        for j, (kind, color) in enumerate((("drift", "#4a7bd0"), ("skew", "#e09b3d"))):
            value = distances.get(f"{kind}.{feature}")
            if value is None:
                continue
            w = max(1.0, width * value / top)
            shapes.append(f'<rect x="{left}" y="{y + j * bar_h}" width="{w:.1f}" '
                          f'height="{bar_h - 1}" fill="{color}"><title>{kind} {_e(feature)}: '
                          f"{value:.4f}</title></rect>")
            shapes.append(f'<text x="{left + w + 4:.1f}" y="{y + j * bar_h + bar_h - 2}">'
                          f"{value:.3f}</text>")
    legend = ('<rect x="150" y="4" width="10" height="8" fill="#4a7bd0"/><text x="164" y="12">'
              'drift vs the previous span</text><rect x="330" y="4" width="10" height="8" '
              'fill="#e09b3d"/><text x="344" y="12">skew train vs eval</text>')
    return (f'<svg class="chart" id="drift-chart" width="{left + width + 60}" '
            f'height="{height}" role="img" aria-label="Jensen-Shannon divergence per feature">'
            f"{legend}{''.join(shapes)}</svg>"
            "<p>Jensen-Shannon divergence on the reference's bins; a change blocks once it is "
            "significant and above its threshold (the anomalies above say which did).</p>")


def _judged_against(baseline: str) -> str:
    return {"none": "no serving version (cold start)",
            "-": "unknown (the run ended before its baseline was resolved)"}.get(
        baseline, f"serving version {baseline.removeprefix('v')}")


def _metrics(blessing: dict) -> str:
    metrics, baseline = blessing.get("metrics") or {}, blessing.get("baseline_metrics") or {}
    if blessing.get("skipped"):
        return f"<p>Not evaluated: {_e(blessing['skipped'])}.</p>"
    if not metrics:
        return "<p>No metrics: the run ended before evaluation.</p>"
    version = blessing.get("baseline_version")
    header = ["metric", "candidate", f"baseline v{version}" if version else "baseline (none)"]
    return _table(header, [[name, float(value), float(baseline[name]) if name in baseline
                            else "-"] for name, value in sorted(metrics.items())])


def _classification(found: dict) -> str:
    parts = []
    points = [(p.get("falsePositiveRate"), p.get("recall"))
              for p in found.get("confidenceMetrics") or []]
    points = sorted((x, y) for x, y in points if x is not None and y is not None)
    if points:
        size, pad = 240, 30
        line = " ".join(f"{pad + x * size:.1f},{pad + (1 - y) * size:.1f}" for x, y in points)
        parts.append(
            f'<svg class="chart" id="roc-chart" width="{size + 2 * pad}" height="{size + 2 * pad}"'
            ' role="img" aria-label="ROC curve">'
            f'<rect x="{pad}" y="{pad}" width="{size}" height="{size}" fill="none" '
            'stroke="#999"/>'
            f'<line x1="{pad}" y1="{pad + size}" x2="{pad + size}" y2="{pad}" stroke="#bbb" '
            'stroke-dasharray="4"/>'
            f'<polyline points="{line}" fill="none" stroke="#4a7bd0" stroke-width="2"/>'
            f'<text x="{pad + size / 2}" y="{size + 2 * pad - 6}" text-anchor="middle">'
            "false positive rate</text>"
            f'<text x="10" y="{pad + size / 2}" transform="rotate(-90 10 {pad + size / 2})" '
            'text-anchor="middle">recall</text></svg>')
    matrix = found.get("confusionMatrix") or {}
    names = [s.get("displayName") for s in matrix.get("annotationSpecs") or []]
    if names and matrix.get("rows"):
        rows = [[f"actual {name}", *map(str, r["row"])] for name, r in zip(
            names, matrix["rows"], strict=False)]
        parts.append("<h3>Confusion matrix</h3>"
                     + _table(["", *(f"predicted {n}" for n in names)], rows))
    return "".join(parts)


def _infra(infra: dict) -> str:
    if not infra:
        return "<p>Not run.</p>"
    if infra.get("skipped"):
        return f"<p>Skipped: {_e(infra['skipped'])}.</p>"
    names = {"startup_s": "server startup (s)", "p50_ms": "p50 latency (ms)",
             "p99_ms": "p99 latency (ms)", "rps": "requests per second",
             "max_abs_diff": "largest difference from the model (in-process)"}
    return _table(["", ""], [[label, float(infra[key])] for key, label in names.items()
                             if isinstance(infra.get(key), (int, float))])


def _text(path: Path, title: str) -> str:
    if not path.is_file():
        return ""
    return f"<details><summary>{_e(title)}</summary><pre>{_e(path.read_text())}</pre></details>"


def _links(run_dir: Path, links_from: Path) -> str:
    views = {"TFDV statistics (Facets)": run_dir / "validate-data" / "statistics_view",
             "drift and skew table": run_dir / "validate-data" / "drift_view",
             "anomalies": run_dir / "validate-data" / "anomalies_report",
             "evaluation (TFMA)": run_dir / "evaluate" / "report",
             "infra validation": run_dir / "infra-validate" / "report"}
    items = [f'<li><a href="{_e(os.path.relpath(path, links_from))}">{_e(name)}</a></li>'
             for name, path in views.items() if path.exists()]
    return f"<ul>{''.join(items)}</ul>" if items else "<p>None written.</p>"
