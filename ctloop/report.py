"""One self-contained HTML page per run: the decisions and their reasons, the data and its
anomalies, drift and skew per feature, candidate vs baseline, ROC and confusion matrix, infra
latency, and the reports or links to the TFDV and evaluation views.

One renderer for both places the page is written: ``ctloop report`` reads a local run's folder
(``ctloop.local.report``), the pipeline's ``run_report`` component its tasks' artifacts; each
turns what it found into a ``Run`` (the tasks' artifacts' metadata and files) and calls
``render``. The page carries its styles and charts (inline SVG) and loads nothing, so it opens
anywhere, offline, and in the KFP UI's artifact view. A small script marks the page once its
charts have a size, which is what the browser tests check.
"""

from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any, Optional

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


@dataclasses.dataclass
class Run:
    """What a run's tasks left, as the page reads it: their output artifacts' metadata ({} for a
    task that did not run, or ran no further than its gate) and the files worth showing.

    Attributes:
        title: The page's heading, e.g. "ctloop run 2026-12-07 00:32:59".
        spans: The spans the run read (select_span's ``spans_read``).
        baseline: The version the run was judged against: metadata with ``version`` (None on a
            cold start; no ``version``: unknown) of load_baseline's artifacts.
        data_valid: validate_data's verdict (None: it did not run).
        train_data, eval_data: ingest's splits' metadata (``rows``).
        anomalies, schema, drift: validate_data's anomalies, schema and drift metrics metadata.
        blessing, classification: evaluate's blessing and ClassificationMetrics metadata.
        infra: infra_validate's infra blessing metadata.
        pushed: rollout's pushed model metadata.
        tuning: tune's best hyperparameters metadata (``tuned``, ``verdict``, ``trial``,
            ``hyperparameters``, ``stopped``); {} or not ``tuned``: no search, no section.
        tuning_page: tune's trials plot and table (an HTML fragment ctloop wrote), if any.
        failed: "<task> failed: <reason>" when a task failed (a local run's folder says so).
        texts: Title -> a Markdown report file, shown folded (files that do not exist are left
            out).
        links: Title -> a relative link to a view beside the page (a local run's folder); none in
            the KFP UI, where each view is its task's own artifact.
    """

    title: str
    spans: list = dataclasses.field(default_factory=list)
    baseline: dict = dataclasses.field(default_factory=dict)
    data_valid: Optional[bool] = None
    train_data: dict = dataclasses.field(default_factory=dict)
    eval_data: dict = dataclasses.field(default_factory=dict)
    anomalies: dict = dataclasses.field(default_factory=dict)
    schema: dict = dataclasses.field(default_factory=dict)
    drift: dict = dataclasses.field(default_factory=dict)
    blessing: dict = dataclasses.field(default_factory=dict)
    classification: dict = dataclasses.field(default_factory=dict)
    infra: dict = dataclasses.field(default_factory=dict)
    pushed: dict = dataclasses.field(default_factory=dict)
    tuning: dict = dataclasses.field(default_factory=dict)
    tuning_page: Optional[str] = None
    failed: Optional[str] = None
    texts: dict = dataclasses.field(default_factory=dict)
    links: dict = dataclasses.field(default_factory=dict)


def baseline_label(metadata: dict[str, Any]) -> str:
    """The version a run was judged against: vN, "none" on a cold start, "-" when unknown (the
    run ended before, or it predates the resolver)."""
    if "version" not in metadata:
        return "-"
    return "none" if metadata["version"] is None else f"v{int(metadata['version'])}"


def outcome(run: Run) -> str:
    """What became of the run, in one line: the failed task and why, rollout's reason, or the
    gate that stopped it (compiled for a cluster, the tasks after it did not run)."""
    if run.failed:
        return run.failed
    if run.pushed.get("reason"):
        return str(run.pushed["reason"])
    if run.data_valid is False:
        return ("not pushed: data validation blocked"
                + (f" ({run.anomalies['summary']})" if run.anomalies.get("summary") else ""))
    if run.blessing and not run.blessing.get("blessed"):
        return f"not pushed: not blessed ({run.blessing.get('reason', 'no reason recorded')})"
    if run.infra and not run.infra.get("infra_blessed"):
        return f"not pushed: not infra-blessed ({run.infra.get('reason', 'no reason recorded')})"
    return "-"


def decisions(run: Run) -> dict[str, Any]:
    """The run's decisions as plain values (the page's badges; the report artifact's
    metadata): data_valid, blessed, infra_blessed (None: not decided), pushed_version (None:
    nothing pushed), baseline ("vN", "none", "-"), outcome."""
    pushed = run.pushed.get("version") if run.pushed.get("pushed") else None
    return {"data_valid": run.data_valid, "blessed": run.blessing.get("blessed"),
            "infra_blessed": run.infra.get("infra_blessed"),
            "pushed_version": None if pushed is None else int(pushed),
            "baseline": baseline_label(run.baseline), "outcome": outcome(run)}


def write(run: Run, output: str | Path) -> Path:
    """Writes the run's page to ``output``; returns its path."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(run))
    return output


def render(run: Run) -> str:
    """The page's HTML."""
    found = decisions(run)
    spans = ",".join(str(int(s)) for s in run.spans) or "-"
    pushed = found["pushed_version"]
    parts = [
        f"<h1>{_e(run.title)}, span {_e(spans)}</h1>",
        "<p>" + "".join(_badge(name, _yes_no(found[key])) for name, key in (
            ("data valid", "data_valid"), ("blessed", "blessed"),
            ("infra-blessed", "infra_blessed"),
        )) + _badge(f"pushed v{pushed}" if pushed is not None else "pushed",
                    "yes" if pushed is not None else "NO") + "</p>",
        f"<p><b>Outcome:</b> {_e(found['outcome'])}</p>",
        f"<p><b>Judged against:</b> {_e(_judged_against(found['baseline']))}</p>",
        "<h2>Decision and reasons</h2>",
        _decisions(run),
        "<h2>Data</h2>",
        _data(run),
        "<h2>Drift and skew per feature</h2>",
        _drift(run.drift),
        _tuning(run),
        "<h2>Candidate vs baseline</h2>",
        _metrics(run.blessing, run.data_valid),
        _classification(run.classification),
        "<h2>Infra validation</h2>",
        _infra(run.infra, run.blessing),
        "<h2>Reports</h2>",
        "".join(_text(Path(path), title) for title, path in run.texts.items()) or (
            "<p>None written.</p>"),
        "<h2>Views</h2>",
        _links(run.links),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(run.title)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{''.join(parts)}\n<script>{_SCRIPT}</script>\n</body></html>\n")


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


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


def _tuning(run: Run) -> str:
    """The search's verdict, the hyperparameters train used and the trials; nothing when no
    search ran (a run with tuning off shows the page it always did)."""
    if not run.tuning.get("tuned"):
        return ""
    chosen = run.tuning.get("hyperparameters") or {}
    page = Path(run.tuning_page) if run.tuning_page else None
    return ("<h2>Hyperparameter search</h2>"
            f"<p><b>Verdict:</b> {_e(run.tuning.get('verdict', '-'))}; "
            f"{_e(run.tuning.get('stopped', ''))}.</p>"
            + _table(["hyperparameter", "trained with"],
                     [[name, json.dumps(value)] for name, value in chosen.items()])
            # ctloop's own fragment (the tune task wrote it): inline styles and SVG only.
            + (page.read_text() if page and page.is_file() else ""))


def _decisions(run: Run) -> str:
    if not run.blessing:
        return f"<p>No evaluation: {_e(_not_reached(run, 'evaluation'))}.</p>"
    parts = [f"<p><b>Blessing:</b> {_e(run.blessing.get('reason', '-'))}</p>"]
    checks = run.blessing.get("checks") or []
    if checks:
        parts.append(_table(["check", "threshold", "value", "passed"], [
            [c.get("metric"), c.get("threshold"), c.get("value"), "yes" if c.get("passed")
             else "NO"] for c in checks]))
    if run.infra:
        parts.append(f"<p><b>Infra:</b> {_e(run.infra.get('reason', '-'))}</p>")
    if run.pushed:
        parts.append(f"<p><b>Rollout:</b> {_e(run.pushed.get('reason', '-'))}</p>")
    elif run.infra and not run.infra.get("infra_blessed"):
        parts.append("<p><b>Rollout:</b> not run: the model is not infra-blessed.</p>")
    return "".join(parts)


def _not_reached(run: Run, step: str) -> str:
    """Why a step left nothing: its gate failed, a task failed, or the run ended before it."""
    if run.data_valid is False:
        return "data validation blocked the run" + (
            f" ({run.anomalies['summary']})" if run.anomalies.get("summary") else "")
    if step == "infra validation" and run.blessing and not run.blessing.get("blessed"):
        return "the model is not blessed"
    return f"the run ended before {'it' if step == 'evaluation' else step}"


def _data(run: Run) -> str:
    anomalies = run.anomalies
    rows = [["train rows", str(int(run.train_data["rows"])) if "rows" in run.train_data else "-"],
            ["eval rows", str(int(run.eval_data["rows"])) if "rows" in run.eval_data else "-"],
            ["anomalies", str(int(anomalies.get("anomaly_count", 0))) if anomalies else "-"],
            ["blocking", str(int(anomalies.get("blocking_count", 0))) if anomalies else "-"],
            ["schema", run.schema.get("source", "-")]]
    if anomalies.get("summary"):
        rows.append(["summary", anomalies["summary"]])
    return _table(["", ""], rows)


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


def _metrics(blessing: dict, data_valid: Optional[bool]) -> str:
    metrics, baseline = blessing.get("metrics") or {}, blessing.get("baseline_metrics") or {}
    if blessing.get("skipped"):
        return f"<p>Not evaluated: {_e(blessing['skipped'])}.</p>"
    if not metrics:
        return ("<p>Not evaluated: data validation blocked the run.</p>" if data_valid is False
                else "<p>No metrics: the run ended before evaluation.</p>")
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


def _infra(infra: dict, blessing: dict) -> str:
    if infra.get("skipped"):
        return f"<p>Skipped: {_e(infra['skipped'])}.</p>"
    if not infra:
        return ("<p>Not run: the model is not blessed.</p>" if blessing
                and not blessing.get("blessed") else "<p>Not run.</p>")
    names = {"startup_s": "server startup (s)", "p50_ms": "p50 latency (ms)",
             "p99_ms": "p99 latency (ms)", "rps": "requests per second",
             "max_abs_diff": "largest difference from the model (in-process)"}
    return _table(["", ""], [[label, float(infra[key])] for key, label in names.items()
                             if isinstance(infra.get(key), (int, float))])


def _text(path: Path, title: str) -> str:
    if not path.is_file():
        return ""
    return f"<details><summary>{_e(title)}</summary><pre>{_e(path.read_text())}</pre></details>"


def _links(links: dict[str, str]) -> str:
    if not links:
        return ("<p>In the KFP UI: validate-data's statistics_view (TFDV statistics) and "
                "drift_view (drift and skew table), evaluate's report and metrics, "
                "infra-validate's report.</p>")
    items = [f'<li><a href="{_e(href)}">{_e(name)}</a></li>' for name, href in links.items()]
    return f"<ul>{''.join(items)}</ul>"
