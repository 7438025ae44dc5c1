"""Drift (this span vs the previous one) and skew (train vs eval) as numbers, for every feature.

TFDV computes a distance only for features that carry a comparator in the schema, and reports it
in ``Anomalies.drift_skew_info`` whether or not the threshold is breached (a breach is also an
anomaly). So a comparator is put on every feature the schema does not already configure:
Jensen-Shannon divergence for numeric features, L-infinity distance for categorical ones (strings,
and integers the schema marks categorical).
"""

from __future__ import annotations

import dataclasses
import html

from ctloop.errors import ConfigError

DRIFT, SKEW = "drift", "skew"
JSD, LINF = "jensen_shannon_divergence", "l_infinity"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Largest distance allowed before drift or skew is an anomaly."""

    drift_jsd: float = 0.1
    drift_linf: float = 0.1
    skew_jsd: float = 0.1
    skew_linf: float = 0.1

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not 0.0 < value <= 1.0:
                raise ConfigError(
                    f"{name} threshold {value} is out of range: distances lie in [0, 1], use a "
                    "value in (0, 1]"
                )


@dataclasses.dataclass(frozen=True)
class Measurement:
    feature: str
    kind: str  # DRIFT or SKEW
    distance: str  # JSD or LINF
    value: float
    threshold: float

    @property
    def breached(self) -> bool:
        return self.value > self.threshold


def add_comparators(schema, thresholds: Thresholds, skip: set[str]) -> None:
    """Adds drift and skew comparators to every feature (not in ``skip``) that has none."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    for feature in schema.feature:
        if feature.name in skip:
            continue
        categorical = feature.type == schema_pb2.BYTES or feature.int_domain.is_categorical
        for comparator, jsd, linf in (
            (feature.drift_comparator, thresholds.drift_jsd, thresholds.drift_linf),
            (feature.skew_comparator, thresholds.skew_jsd, thresholds.skew_linf),
        ):
            if comparator.ByteSize():  # a curated schema's own comparator wins
                continue
            if categorical:
                comparator.infinity_norm.threshold = linf
            else:
                comparator.jensen_shannon_divergence.threshold = jsd


def measurements(anomalies) -> list[Measurement]:
    """Every drift and skew distance TFDV computed, sorted by kind then feature."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    kinds = anomalies_pb2.DriftSkewInfo.Measurement.Type
    found = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for kind, items in ((DRIFT, info.drift_measurements), (SKEW, info.skew_measurements)):
            for item in items:
                distance = JSD if item.type == kinds.JENSEN_SHANNON_DIVERGENCE else LINF
                found.append(Measurement(feature, kind, distance, item.value, item.threshold))
    return sorted(found, key=lambda m: (m.kind, m.feature))


def as_metrics(found: list[Measurement]) -> dict[str, float]:
    """``drift.<feature>`` / ``skew.<feature>`` -> distance, for KFP Metrics."""
    return {f"{m.kind}.{m.feature}": m.value for m in found}


def markdown(found: list[Measurement], previous_span: int | None) -> str:
    lines = ["## Drift and skew", ""]
    if previous_span is None:
        lines += ["Drift: no earlier span's statistics are stored (first span), so none is "
                  "measured.", ""]
    else:
        lines += [f"Drift: train split vs span {previous_span}'s train split. "
                  "Skew: train split vs eval split.", ""]
    if not found:
        return "\n".join(lines + ["No distances computed."]) + "\n"
    lines += ["| feature | kind | distance | value | threshold | status |", "|---" * 6 + "|"]
    lines += [
        f"| `{m.feature}` | {m.kind} | {m.distance} | {m.value:.4f} | {m.threshold:g} | "
        f"{'**breached**' if m.breached else 'ok'} |"
        for m in found
    ]
    return "\n".join(lines) + "\n"


def html_table(found: list[Measurement], previous_span: int | None, span: int) -> str:
    """A self-contained HTML table of every distance, breaches highlighted (KFP HTML view)."""
    against = f"span {previous_span}" if previous_span is not None else "no earlier span"
    rows = "".join(
        f"<tr class='{'bad' if m.breached else 'ok'}'><td>{html.escape(m.feature)}</td>"
        f"<td>{m.kind}</td><td>{m.distance}</td><td>{m.value:.4f}</td><td>{m.threshold:g}</td>"
        f"<td>{'breached' if m.breached else 'ok'}</td></tr>"
        for m in found
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Drift and skew</title><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "tr.bad{background:#fdd}</style></head><body>"
        f"<h2>Drift and skew, span {span}</h2>"
        f"<p>Drift: train split vs {html.escape(against)}. Skew: train split vs eval split.</p>"
        "<table><tr><th>feature</th><th>kind</th><th>distance</th><th>value</th>"
        f"<th>threshold</th><th>status</th></tr>{rows}</table></body></html>"
    )
