"""Drift and skew measurements as people and KFP read them: a Markdown table (data validation's
and monitoring's reports), a self-contained HTML table (KFP's HTML view) and KFP Metrics."""

from __future__ import annotations

import html

from ctloop.drift import Measurement


def as_metrics(found: list[Measurement]) -> dict[str, float]:
    """``drift.<feature>`` / ``skew.<feature>`` -> distance, for KFP Metrics."""
    return {f"{m.kind}.{m.feature}": m.value for m in found}


def _new(m: Measurement) -> str:
    if m.new_share is None:
        return ""
    return f"{m.new_share:.2%} (expected {m.new_expected:.2%})"


def _p(m: Measurement) -> str:
    if m.p_value is None:
        return "n/a"
    return f"{m.p_value:.2g} (< {m.alpha:.2g}?)"


HOW = ("Each feature's rows are binned by the reference (a numeric feature's deciles, a "
       "categorical one's most common values and \"other\"; missing values are a bin), and the "
       "distance is the Jensen-Shannon divergence between the two sides' shares. A change blocks "
       "when it is significant (p-value below the false-alarm rate shared by every test of this "
       "validation) and at least the threshold. Rows judged by TFDV come from a curated schema's "
       "own comparators.")


def markdown(found: list[Measurement], previous_span: int | None,
             previous_note: str | None = None) -> str:
    lines = ["## Drift and skew", ""]
    if previous_span is None:
        lines += ["Drift: no earlier span's statistics are stored (first span), so none is "
                  "measured. Skew: train split vs eval split.", ""]
    else:
        lines += [f"Drift: train split vs span {previous_span}'s train split. "
                  "Skew: train split vs eval split.", ""]
    if previous_note:
        lines += [previous_note, ""]
    lines += [HOW, ""]
    if not found:
        return "\n".join(lines + ["No distances computed."]) + "\n"
    lines += ["| feature | kind | JSD | threshold | p-value | rows (ref, new) | largest move | "
              "new values | judged by | status |", "|---" * 10 + "|"]
    lines += [
        f"| `{m.feature}` | {m.kind} | {m.value:.4f} | {m.threshold:g} | {_p(m)} | "
        f"{m.rows[0]}, {m.rows[1]} | {m.moved.replace('|', '/')} | {_new(m)} | {m.source} | "
        f"{'**breached**' if m.breached else m.status} |"
        for m in found
    ]
    return "\n".join(lines) + "\n"


def html_table(found: list[Measurement], previous_span: int | None, span: int) -> str:
    """A self-contained HTML table of every distance, breaches highlighted (KFP HTML view)."""
    against = f"span {previous_span}" if previous_span is not None else "no earlier span"
    rows = "".join(
        f"<tr class='{'bad' if m.breached else 'ok'}'><td>{html.escape(m.feature)}</td>"
        f"<td>{m.kind}</td><td>{m.value:.4f}</td><td>{m.threshold:g}</td>"
        f"<td>{html.escape(_p(m))}</td><td>{m.rows[0]}, {m.rows[1]}</td>"
        f"<td>{html.escape(m.moved)}</td><td>{html.escape(_new(m))}</td><td>{m.source}</td>"
        f"<td>{m.status}</td></tr>"
        for m in found
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift and skew</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "tr.bad{background:#fdd}</style></head><body>"
        f"<h2>Drift and skew, span {span}</h2>"
        f"<p>Drift: train split vs {html.escape(against)}. Skew: train split vs eval split.</p>"
        f"<p>{html.escape(HOW)}</p>"
        "<table><tr><th>feature</th><th>kind</th><th>JSD</th><th>threshold</th>"
        "<th>p-value</th><th>rows (ref, new)</th><th>largest move</th><th>new values</th>"
        "<th>judged by</th>"
        f"<th>status</th></tr>{rows}</table></body></html>"
    )

