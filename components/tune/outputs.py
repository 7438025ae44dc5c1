"""The tune task's files: the chosen hyperparameters (JSON), the trials (CSV) and a page with the
trials' table and a plot of their values (inline SVG, drawn from the numbers)."""

from __future__ import annotations

import csv
import html
import json
from pathlib import Path
from typing import Any

from ctloop.components.tune.logic import HISTORY_FILE, Search
from ctloop.tuning import BEST_FILE, TRIALS_PAGE

WIDTH, HEIGHT, PAD = 640, 260, 40
CHOSEN = ' style="background:#dfd"'  # the chosen trial's row


def write(search: Search, best_dir: str, history_dir: str, report_path: str) -> None:
    Path(best_dir).mkdir(parents=True, exist_ok=True)
    Path(best_dir, BEST_FILE).write_text(json.dumps(best(search), indent=2))
    names = list(dict.fromkeys(k for t in search.trials for k in t["params"]))
    Path(best_dir, TRIALS_PAGE).write_text(trials(search, names))
    Path(history_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(history_dir, HISTORY_FILE), "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["trial", "configured", *names, search.metric, "epochs_run", "seconds"])
        for t in search.trials:
            writer.writerow([t["number"], t["defaults"], *[_cell(t["params"].get(n))
                                                            for n in names],
                             t["value"], t["epochs_run"], t["seconds"]])
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(page(search, names))


def skip(reason: str, best_dir: str, history_dir: str, report_path: str) -> None:
    """The outputs of a search that did not run: empty, and a page saying why."""
    Path(best_dir).mkdir(parents=True, exist_ok=True)
    Path(history_dir).mkdir(parents=True, exist_ok=True)
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text("<!doctype html><meta charset=utf-8><title>tune</title>"
                                 f"<p>No search: {html.escape(reason)}.</p>")


def best(search: Search) -> dict[str, Any]:
    """What train reads: the hyperparameters, and where they came from."""
    chosen = search.chosen
    return {"hyperparameters": search.hyperparameters, "trial": chosen["number"],
            "configured": chosen["defaults"], "metric": search.metric, "value": chosen["value"],
            "configured_value": search.defaults["value"] if search.defaults else None,
            "verdict": search.verdict(), "trials": len(search.trials), "stopped": search.stopped}


def _cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list) else value


def trials(search: Search, names: list[str]) -> str:
    """The trials' plot and table: an HTML fragment, inline styles only (the run's page embeds
    it)."""
    rows = "".join(
        f"<tr{CHOSEN if t is search.chosen else ''}><td>{t['number']}"
        f"{' (configured)' if t['defaults'] else ''}</td>"
        + "".join(f"<td>{html.escape(str(_cell(t['params'].get(n, '')) ))}</td>" for n in names)
        + f"<td>{t['value']:.4f}</td><td>{t['epochs_run']}</td><td>{t['seconds']:.1f}</td></tr>"
        for t in search.trials)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    mean = sum(t["seconds"] for t in search.trials) / len(search.trials)
    return (
        f"<p>{len(search.trials)} trials, {search.workers} at once, {search.seconds:.1f} s "
        f"({mean:.1f} s per trial); stopped: {html.escape(search.stopped)}. Measured on "
        f"{search.rows.get('validation', '?')} validation rows carved out of the train split "
        f"(fitted on {search.rows.get('fit', '?')}).</p>"
        f"{plot(search)}<table><tr><th>trial</th>{head}<th>{search.metric}</th>"
        f"<th>epochs</th><th>s</th></tr>{rows}</table>")


def page(search: Search, names: list[str]) -> str:
    return ("<!doctype html><meta charset=utf-8><title>tune</title>"
            "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}</style>"
            f"<h1>Hyperparameter search</h1><p>{html.escape(search.verdict())}.</p>"
            + trials(search, names))


def plot(search: Search) -> str:
    """Each trial's value (dots; the configured trial hollow) and the best so far (a line)."""
    values = [t["value"] for t in search.trials]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    last = max(t["number"] for t in search.trials) or 1

    def xy(number: int, value: float) -> tuple[float, float]:
        return (PAD + (WIDTH - 2 * PAD) * number / last,
                HEIGHT - PAD - (HEIGHT - 2 * PAD) * (value - low) / span)

    best, line = None, []
    for t in search.trials:
        if best is None or (t["value"] > best if search.higher_is_better else t["value"] < best):
            best = t["value"]
        line.append("{:.1f},{:.1f}".format(*xy(t["number"], best)))
    dots = []
    for t in search.trials:
        x, y = xy(t["number"], t["value"])
        fill = "white" if t["defaults"] else "#1f77b4"
        dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{fill}" stroke="#1f77b4">'
                    f'<title>trial {t["number"]}: {t["value"]:.4f}</title></circle>')
    return (f'<svg width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{search.metric} per trial">'
            f'<polyline points="{" ".join(line)}" fill="none" stroke="#2ca02c"/>{"".join(dots)}'
            f'<text x="{PAD}" y="{PAD - 10}">{search.metric}: {high:.4f}</text>'
            f'<text x="{PAD}" y="{HEIGHT - 10}">{low:.4f}; trial 0 to {last}, '
            "hollow: configured, line: best so far</text></svg>")
