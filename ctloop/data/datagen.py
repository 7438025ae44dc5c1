"""Deterministic, realistic tabular spans: a subscription-churn table with a learnable label.

Each span is drawn from ``numpy.random.default_rng([seed, span])``, so the same arguments always
write the same bytes. Columns mix integers, floats and strings, with missing values, an ID column
that a pipeline should exclude, and a binary label driven by a known logistic model. Two knobs
move the data the way real data moves: ``drift`` shifts feature distributions (covariate drift),
``corrupt`` injects out-of-range numbers and unseen categories into a share of the rows.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from ctloop.errors import ConfigError

LABEL = "churned"
ID_COLUMN = "customer_id"
PLANS = ("basic", "standard", "premium")
CONTRACTS = ("month-to-month", "one-year", "two-year")
REGIONS = ("north", "south", "east", "west", "central")
PAYMENTS = ("card", "bank-transfer", "electronic-check", "mailed-check")
FORMATS = ("csv", "parquet")


@dataclasses.dataclass(frozen=True)
class SpanSpec:
    """How to draw one span."""

    span: int
    rows: int = 5000
    seed: int = 42
    drift: float = 0.0
    corrupt: float = 0.0

    def __post_init__(self):
        if self.span < 1:
            raise ConfigError(f"span {self.span} is invalid: spans are numbered from 1")
        if self.rows < 1:
            raise ConfigError(f"rows {self.rows} is invalid: generate at least 1 row")
        for knob in ("drift", "corrupt"):
            value = getattr(self, knob)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{knob} {value} is out of range: use a value in [0, 1]")


def generate_span(spec: SpanSpec) -> pd.DataFrame:
    """Returns the rows of one span."""
    rng = np.random.default_rng([spec.seed, spec.span])
    n, drift = spec.rows, spec.drift

    # Drift: older, richer customers on pricier plans, paying more; the label model is unchanged,
    # so a model trained before the drift still works but sees inputs it rarely saw.
    age = np.clip(rng.normal(42 + 10 * drift, 13, n), 18, 90).round()
    income = rng.lognormal(np.log(52_000 * (1 + 0.5 * drift)), 0.45, n).round(2)
    tenure = rng.integers(0, 73, n)
    plan = rng.choice(PLANS, n, p=_mix([0.45, 0.35, 0.20], [0.15, 0.35, 0.50], drift))
    contract = rng.choice(CONTRACTS, n, p=[0.55, 0.25, 0.20])
    region = rng.choice(REGIONS, n, p=[0.22, 0.2, 0.2, 0.18, 0.2])
    payment = rng.choice(PAYMENTS, n, p=[0.35, 0.25, 0.25, 0.15])
    base_charge = {"basic": 35.0, "standard": 65.0, "premium": 95.0}
    monthly = np.array([base_charge[p] for p in plan]) + rng.normal(15 * drift, 8, n)
    monthly = monthly.round(2)
    calls = rng.poisson(1.2 + 0.8 * (contract == "month-to-month"), n)

    logit = (
        -1.6
        + 1.1 * (contract == "month-to-month")
        - 0.9 * (contract == "two-year")
        - 0.035 * (tenure - 24)
        + 0.45 * calls
        + 0.025 * (monthly - 60)
        - 0.6 * np.log(income / 52_000)
        + 0.55 * (payment == "electronic-check")
        - 0.012 * (age - 42)
    )
    churned = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)

    frame = pd.DataFrame(
        {
            ID_COLUMN: [f"C{spec.span:04d}-{i:06d}" for i in range(n)],
            "age": age,
            "income": income,
            "tenure_months": tenure,
            "plan": plan,
            "contract": contract,
            "region": region,
            "payment_method": payment,
            "monthly_charges": monthly,
            "support_calls": calls,
            LABEL: churned,
        }
    )
    # Missing values, as real exports have them: numbers as NaN, strings as empty cells.
    for column, share in (("age", 0.02), ("income", 0.05), ("region", 0.03)):
        frame.loc[rng.random(n) < share, column] = None
    if spec.corrupt:
        bad = rng.random(n) < spec.corrupt
        frame.loc[bad, "age"] = -1.0
        frame.loc[bad, "plan"] = "PREMIUM+"
        frame.loc[bad, "monthly_charges"] = 1e6
    return frame


def write_spans(
    out_dir: str | Path,
    spans: int,
    *,
    first_span: int = 1,
    rows: int = 5000,
    seed: int = 42,
    drift: float = 0.0,
    corrupt: float = 0.0,
    fmt: str = "csv",
) -> list[Path]:
    """Writes ``out_dir/span-<n>/data.<fmt>`` for ``spans`` consecutive spans.

    Returns:
        The files written, in span order.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format {fmt!r} is not supported: use one of {', '.join(FORMATS)}")
    if spans < 1:
        raise ConfigError(f"spans {spans} is invalid: write at least 1 span")
    written = []
    for span in range(first_span, first_span + spans):
        frame = generate_span(SpanSpec(span, rows, seed, drift, corrupt))
        path = Path(out_dir) / f"span-{span}" / f"data.{fmt}"
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        written.append(path)
    return written


def _mix(start: list[float], end: list[float], t: float) -> list[float]:
    return [(1 - t) * a + t * b for a, b in zip(start, end, strict=True)]
