"""Drift (this span vs the previous one) and skew (train vs eval), calibrated, for every feature.

Why not TFDV's comparators: TFDV's approximate Jensen-Shannon divergence compares each side's own
equal-width (min to max) histogram, re-bucketed on the assumption that values spread evenly
inside buckets. On heavy-tailed real columns two random halves of one data set reach 0.3-0.7,
and the value grows as samples shrink (tensorflow/data-validation issues 207 and 216), so no
fixed threshold separates "same distribution" from "changed". Here instead:

- **Shared bins.** The reference side (the previous span's train split for drift, this span's
  train split for skew) defines the bins: a numeric feature's deciles (right-closed, so a value
  that fills several deciles, such as 0 in a mostly-zero column, is one bin of its own); a
  categorical feature's most common values plus "other" (every value outside them, unseen ones
  included). Missing values are a bin of their own in both, so a column that empties, or is
  dropped, moves mass like any other change. The reference's bins and counts (its *profile*)
  are stored in its TFDV statistics (a custom statistic per feature), so the next span is
  binned exactly as the reference was.
- **The distance**: the Jensen-Shannon divergence (base 2, in [0, 1]) between the two sides'
  shares of those bins: the *effect size*. Under "no change" its expectation shrinks like
  (bins - 1) / rows, so it is compared to a threshold only once the change is significant.
- **Values outside what the reference saw**: categories it never saw, numbers beyond its minimum
  or maximum. Some are expected of any new sample (rare categories land on one side only; of
  two samples, each has values beyond the other's extremes); a share at least
  ``MIN_NEW_SHARE`` and significantly more than chance gives (``unseen``) blocks. This is the
  calibrated form of a categorical domain and of a numeric range.
- **The decision accounts for the rows**: a change is drift (or skew) when it is statistically
  significant AND at least the effect-size threshold. Significance: Pearson's chi-square test on
  the present values' bins (adjacent bins merged until every expected count is at least
  ``MIN_EXPECTED``, where the chi-square approximation holds) and Fisher's exact test on the
  missing share, combined per feature (Bonferroni, two tests), then held to a family-wise
  false-alarm rate over every feature and kind of the validation (Bonferroni again). So
  unchanged data raises a false alarm in at most ``false_alarm_rate`` of validations, whether a
  span has 300 rows or 300,000, and a large span does not block on a change too small to matter.

TFDV still computes the statistics, infers the schema and finds the anomalies it is good at
(types, domains, new columns); a curated schema's own drift/skew comparators are TFDV's to
judge and are reported as such (``source``).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd

# When a change blocks is a tunable, and the anomaly types of the breaches judged here (TFDV's
# own types name TFDV's checks) are keys of the anomaly policy: defined with the settings.
from ctloop.settings import DRIFT_TYPE, NEW_VALUES_TYPE, SKEW_TYPE  # noqa: F401
from ctloop.settings import DriftThresholds as Thresholds  # noqa: F401

DRIFT, SKEW = "drift", "skew"
CTLOOP, TFDV = "ctloop", "tfdv"
NUMERIC, CATEGORICAL = "numeric", "categorical"
QUANTILES = 10
MIN_EXPECTED = 5.0  # smallest expected count per bin for the chi-square test (Cochran's rule)
# A categorical reference counts up to this many distinct values, each its own bin (the rest share
# "other"); a column with more is an ID or free text, whose new values say nothing.
MAX_KNOWN = 1000
# The smallest share of values outside what the reference saw (new categories, numbers beyond its
# minimum or maximum) that blocks, once significantly more than expected.
MIN_NEW_SHARE = 0.01
PROFILE_STAT = "ctloop.profile"
MISSING, OTHER = "(missing)", "(other)"


@dataclasses.dataclass(frozen=True)
class Profile:
    """A sample's counts over a feature's bins; the reference a later sample is binned like.

    Numeric: ``edges`` are the right-closed edges between value bins (len(edges) + 1 bins).
    Categorical: ``values`` are the value bins (the most common ``MAX_KNOWN``), then one "other"
    bin, which only a reference of more distinct values uses (then new values are not tracked:
    ``tracks_new``). Either way the last count is the missing values'. ``low``/``high``: a
    numeric reference's smallest and largest value.
    ``unseen_rate``: the share of a new sample of the same distribution expected outside what
    the reference saw (Good-Turing: the share of values seen once, for categories; 2 / (n + 1),
    for numbers beyond the extremes of n).
    """

    kind: str
    counts: tuple[int, ...]
    edges: tuple[float, ...] = ()
    values: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    unseen_rate: float = 0.0

    @property
    def labels(self) -> list[str]:
        if self.kind == CATEGORICAL:
            return [*self.values, OTHER, MISSING]
        bounds = ["-inf", *(f"{e:.6g}" for e in self.edges), "inf"]
        return [f"({lo}, {hi}]" for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)] + [MISSING]

    @property
    def tracks_new(self) -> bool:
        """Whether values outside the reference's can be told (``unseen``)."""
        if self.kind == CATEGORICAL:
            return bool(self.values) and self.counts[-2] == 0
        return self.low is not None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Profile:
        fields = json.loads(text)
        for name in ("counts", "edges", "values"):
            fields[name] = tuple(fields[name])
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class Measurement:
    feature: str
    kind: str  # DRIFT or SKEW
    value: float  # Jensen-Shannon divergence on the reference's bins
    threshold: float
    source: str = CTLOOP  # CTLOOP (judged here) or TFDV (a curated schema's comparator)
    p_value: float | None = None  # None: TFDV's comparators have none
    alpha: float | None = None  # the p-value below which a change is significant
    rows: tuple[int, int] = (0, 0)  # (reference, compared)
    moved: str = ""  # the bin whose share changed most, e.g. "(10, 20]: 12.0% -> 18.1%"
    distance: str = "jensen_shannon_divergence"
    # The share of present values outside what the reference saw (None: not tracked), what the
    # reference leads one to expect, and the probability of at least that many by chance.
    new_share: float | None = None
    new_expected: float = 0.0
    new_p_value: float = 1.0
    feature_kind: str = NUMERIC  # how the feature was binned: NUMERIC or CATEGORICAL

    @property
    def too_new(self) -> bool:
        return (self.source == CTLOOP and self.new_share is not None
                and self.new_share >= MIN_NEW_SHARE and self.new_p_value < self.alpha)

    @property
    def significant(self) -> bool:
        return self.p_value is None or self.p_value < self.alpha

    @property
    def breached(self) -> bool:
        if self.source == TFDV:
            return self.value > self.threshold
        return self.significant and self.value >= self.threshold

    @property
    def status(self) -> str:
        if self.breached or self.too_new:
            return "breached"
        if self.source == CTLOOP and self.value >= self.threshold:
            return "ok (not significant)"
        return "ok"


def profile(values: pd.Series, kind: str) -> Profile:
    """The reference profile of ``values``: its bins, and its counts in them.

    Numeric values that do not parse as numbers count as missing (TFDV reports the type).
    """
    if kind == NUMERIC:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        present = numbers[~np.isnan(numbers)]
        # "inverted_cdf": edges are values of the data, so a value filling several deciles
        # (0 in a mostly-zero column) is the right edge of one bin holding all of it.
        if not present.size:
            return count(Profile(NUMERIC, ()), values, len(values))
        low, high = float(present.min()), float(present.max())
        # ``present`` is a copy of this function's own: the quantile may reorder it in place.
        edges = tuple(float(e) for e in np.unique(np.quantile(
            present, np.arange(1, QUANTILES) / QUANTILES, method="inverted_cdf",
            overwrite_input=True)))
        return count(Profile(NUMERIC, (), edges, low=low, high=high,
                             unseen_rate=2 / (present.size + 1)), values, len(values))
    counts = text_counts(values)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return count(Profile(
        CATEGORICAL, (), values=tuple(v for v, _ in ordered[:MAX_KNOWN]),
        unseen_rate=max(int((counts == 1).sum()), 1) / counts.sum() if len(counts) else 0.0),
        values, len(values))


def text_counts(values: pd.Series) -> pd.Series:
    """The present values' counts, keyed by their text (``str``, as ``astype(str)`` writes it).

    Counted first and turned into text after, a text per distinct value, not per row: a 4M-row
    integer label as text alone would be 4M strings (about 250 MB).
    """
    counts = values.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]  # a categorical's categories absent from these rows
    counts.index = counts.index.astype(str)
    if not counts.index.is_unique:  # e.g. 1 and "1" in one column
        counts = counts.groupby(level=0, sort=False).sum()
    return counts


def count(reference: Profile, values: pd.Series | None, rows: int) -> Profile:
    """``values`` counted in ``reference``'s bins (``None``: a column absent from the data, its
    ``rows`` all missing)."""
    size = len(reference.edges) + 1 if reference.kind == NUMERIC else len(reference.values) + 1
    if values is None:
        return dataclasses.replace(reference, counts=(0,) * size + (rows,))
    if reference.kind == NUMERIC:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        missing = np.isnan(numbers)
        # NaN sorts after every edge, into the last bin: counted there, then taken out (no
        # copy of the present values).
        counts = np.bincount(np.searchsorted(np.asarray(reference.edges, dtype=float), numbers,
                                             side="left"), minlength=size)
        counts[size - 1] -= int(missing.sum())
    else:
        # Each distinct value is turned into text and looked up once, not once per row.
        codes, distinct = pd.factorize(values)
        missing = codes < 0
        index = {v: i for i, v in enumerate(reference.values)}
        lookup = np.array([index.get(str(v), len(reference.values)) for v in distinct] or [0],
                          dtype=np.int64)
        counts = np.bincount(lookup[codes[~missing]], minlength=size)
    counts = counts.tolist() + [int(missing.sum())]
    return dataclasses.replace(reference, counts=tuple(int(c) for c in counts))


def jensen_shannon(a: np.ndarray, b: np.ndarray) -> float:
    """Jensen-Shannon divergence (base 2) between two count vectors' shares."""
    p, q = a / a.sum(), b / b.sum()
    m = (p + q) / 2

    def kl(x):
        nonzero = x > 0
        return float(np.sum(x[nonzero] * np.log2(x[nonzero] / m[nonzero])))

    return max(0.0, (kl(p) + kl(q)) / 2)


def compared(a: np.ndarray, b: np.ndarray, ordered: bool) -> tuple[float, float]:
    """The distance between two samples' counts over the same bins (the last: missing values),
    and its p-value: the probability of a change at least this large if both were samples of one
    distribution. ``ordered``: the present bins are ordered (numeric).

    Both are computed on the present values' bins merged until every expected count is at
    least ``MIN_EXPECTED`` (``_merge``), plus the missing bin: many sparse bins would make noise
    look like distance, and the chi-square approximation fails on them. Significance: Pearson's
    chi-square test of homogeneity on the merged bins and Fisher's exact test on the missing
    share; the smaller p-value times the number of tests (Bonferroni).
    """
    from scipy import special

    a, b = np.asarray(a, float), np.asarray(b, float)
    if not (a.sum() and b.sum()):
        return 0.0, 1.0
    merged = _merge(a[:-1], b[:-1], ordered)
    if merged is None:
        ma, mb = a[:-1].sum(keepdims=True), b[:-1].sum(keepdims=True)
    else:
        ma, mb = merged
    distance = jensen_shannon(np.append(ma, a[-1]), np.append(mb, b[-1]))
    tests = []
    if merged is not None and ma.size > 1:
        total = ma + mb
        expected = np.outer([ma.sum(), mb.sum()], total) / total.sum()
        # Pearson's statistic: closer to its chi-square law than the G statistic when expected
        # counts are small, as the merged bins of rare categories are.
        pearson = float(np.sum((np.stack([ma, mb]) - expected) ** 2 / expected))
        # chi2.sf, which is special.chdtrc (scipy.stats imports every distribution: 0.5 s).
        tests.append(float(special.chdtrc(ma.size - 1, pearson)))
    if a[-1] + b[-1] > 0 and a[:-1].sum() + b[:-1].sum() > 0:
        tests.append(fisher_exact(int(a[-1]), int(a[:-1].sum()), int(b[-1]), int(b[:-1].sum())))
    return distance, min(1.0, len(tests) * min(tests)) if tests else 1.0


def fisher_exact(a: int, b: int, c: int, d: int) -> float:
    """Fisher's exact test of the 2x2 table [[a, b], [c, d]], two-sided: the probability, with
    the margins fixed, of a table no more probable than this one (the hypergeometric law of
    its top-left cell), summed as R's ``fisher.test`` does (ties within a relative 1e-7).
    ``scipy.stats.fisher_exact`` computes the same; this needs only ``scipy.special``."""
    from scipy import special

    rows, column, total = a + b, a + c, a + b + c + d
    cells = np.arange(max(0, rows + column - total), min(rows, column) + 1, dtype=float)

    def log_choose(n, k):
        return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)

    log_p = (log_choose(column, cells) + log_choose(total - column, rows - cells)
             - log_choose(total, rows))
    observed = log_p[int(a - cells[0])]
    return float(min(1.0, np.exp(log_p[log_p <= observed + np.log1p(1e-7)]).sum()))


def _merge(a: np.ndarray, b: np.ndarray, ordered: bool):
    """Bins merged until each expects ``MIN_EXPECTED`` rows of the smaller side, or None.

    Numeric bins merge with their neighbours (they are ordered); categorical ones are ordered
    by their count on both sides together, so which values get a bin of their own is decided
    by both samples alike (bins picked by the reference's counts alone would favour values
    that happened to be common there, and read their regression as drift).
    """
    na, nb = a.sum(), b.sum()
    if na == 0 or nb == 0:
        return None
    smaller = min(na, nb) / (na + nb)
    if not ordered:
        order = np.argsort(-(a + b), kind="stable")
        a, b = a[order], b[order]
    groups, start = [], 0
    for end in range(1, a.size + 1):
        if (a[start:end].sum() + b[start:end].sum()) * smaller >= MIN_EXPECTED:
            groups.append((start, end))
            start = end
    if start < a.size:  # the remainder joins the last group
        groups[-1:] = [(groups[-1][0] if groups else 0, a.size)]
    merged_a = np.array([a[s:e].sum() for s, e in groups])
    merged_b = np.array([b[s:e].sum() for s, e in groups])
    return merged_a, merged_b


def moved(reference: Profile, current: Profile) -> str:
    """The bin whose share changed most, with both shares."""
    a, b = np.asarray(reference.counts, float), np.asarray(current.counts, float)
    p, q = a / max(a.sum(), 1), b / max(b.sum(), 1)
    i = int(np.argmax(np.abs(q - p)))
    return f"{reference.labels[i]}: {p[i]:.1%} -> {q[i]:.1%}"


def unseen(reference: Profile, values: pd.Series | None) -> tuple[float | None, float]:
    """The share of ``values``' present values outside what ``reference`` saw (categories it
    never saw, numbers beyond its extremes), and the probability of at least that many if both
    were samples of one distribution: a permutation argument, conditional on the pooled values.

    Numbers: exact. Of n + m exchangeable values, the chance that the k largest all belong to
    the m new ones is the product of (m - i) / (n + m - i) for i < k; the smaller of the two
    tails' chances, doubled. Categories: a value with c rows in both samples together lands
    wholly in the new one with chance q ** c, q = m / (n + m) (each row split independently), and
    then adds c unseen rows; the chance of at least the observed unseen rows is bounded by
    Chernoff's inequality over that sum. Rare values often land on one side alone, which is
    why a few new categories are normal; a renamed category (c in the hundreds) never does.

    (None, 1.0): not tracked (a categorical of more than ``MAX_KNOWN`` values, an empty
    reference, an absent column).
    """
    if values is None or not reference.tracks_new:
        return None, 1.0
    n = sum(reference.counts[:-1])
    if reference.kind == NUMERIC:
        numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy(dtype=float)
        m = numbers.size
        tails = [int(np.sum(numbers < reference.low)), int(np.sum(numbers > reference.high))]
        if not m:
            return 0.0, 1.0
        chances = [float(np.prod((m - np.arange(k)) / (n + m - np.arange(k)))) for k in tails]
        return sum(tails) / m, min(1.0, 2 * min(chances))
    current = text_counts(values)
    m = int(current.sum())
    known = dict(zip(reference.values, reference.counts[:-2], strict=True))
    outside = int(sum(c for v, c in current.items() if v not in known))
    if not m or not outside:
        return (outside / m if m else 0.0), 1.0
    pooled = np.array([c + int(current.get(v, 0)) for v, c in known.items()]
                      + [c for v, c in current.items() if v not in known], dtype=float)
    log_q = np.log(m / (n + m))
    # log P(U >= u) <= min over t > 0 of log E[exp(t U)] - t u, U = sum of c * Bernoulli(q ** c).
    t = np.geomspace(1e-6, 50.0 / pooled.min(), 400)[:, None]
    log_mgf = np.logaddexp(np.log1p(-np.exp(pooled * log_q)), pooled * log_q + t * pooled)
    bound = float(np.min(log_mgf.sum(axis=1) - t[:, 0] * outside))
    return outside / m, float(min(1.0, np.exp(bound)))


def measure(feature: str, kind: str, reference: Profile, values: pd.Series | None, rows: int,
            threshold: float) -> Measurement:
    """One feature's change from ``reference`` to ``values`` (``None``: a column absent from
    the data, ``rows`` missing); its alpha is set by ``judge``."""
    current = count(reference, values, rows)
    a, b = reference.counts, current.counts
    if reference.kind == CATEGORICAL and reference.tracks_new and values is not None:
        # Each value the reference never saw is a bin of its own (with no reference rows), as
        # each it saw: which side a value falls on is all the test asks, for new ones too.
        # In name order: bins of equal pooled counts then mix both sides' values when merged,
        # instead of grouping the reference's rare values apart from the new sample's.
        seen = text_counts(values)
        both = {v: [c, 0] for v, c in zip(reference.values, a[:-2], strict=True)}
        for v, c in seen.items():
            both.setdefault(v, [0, 0])[1] = int(c)
        names = sorted(both)
        a = [*(both[v][0] for v in names), a[-1]]
        b = [*(both[v][1] for v in names), b[-1]]
    value, p = compared(a, b, ordered=reference.kind == NUMERIC)
    share, share_p = unseen(reference, values)
    return Measurement(feature, kind, round(value, 6), threshold, CTLOOP, p, None,
                       (sum(reference.counts), sum(current.counts)),
                       moved(reference, current), new_share=share,
                       new_expected=reference.unseen_rate, new_p_value=share_p,
                       feature_kind=reference.kind)


def judge(found: list[Measurement], false_alarm_rate: float) -> list[Measurement]:
    """Sets each measurement's alpha: the false-alarm rate shared by every test judged here
    (two per measurement: the distribution, and the values outside the reference's)."""
    tests = 2 * sum(1 for m in found if m.source == CTLOOP)
    return sorted(
        (dataclasses.replace(m, alpha=false_alarm_rate / tests) if m.source == CTLOOP else m
         for m in found),
        key=lambda m: (m.kind, m.feature))


def read_profiles(stats) -> dict[str, Profile]:
    """Feature -> profile, from the custom statistics of a DatasetFeatureStatisticsList."""
    found = {}
    for feature in stats.datasets[0].features:
        for custom in feature.custom_stats:
            if custom.name == PROFILE_STAT:
                found[".".join(feature.path.step)] = Profile.from_json(custom.str)
    return found


def write_profiles(stats, profiles: dict[str, Profile]) -> None:
    """Stores each feature's profile in ``stats`` as a custom statistic (replacing any)."""
    for feature in stats.datasets[0].features:
        name = ".".join(feature.path.step)
        if name not in profiles:
            continue
        kept = [c for c in feature.custom_stats if c.name != PROFILE_STAT]
        del feature.custom_stats[:]
        feature.custom_stats.extend(kept)
        feature.custom_stats.add(name=PROFILE_STAT, str=profiles[name].to_json())


def tfdv_measurements(anomalies) -> list[Measurement]:
    """The distances TFDV computed for a curated schema's own comparators."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    kinds = anomalies_pb2.DriftSkewInfo.Measurement.Type
    found = []
    for info in anomalies.drift_skew_info:
        feature = ".".join(info.path.step)
        for kind, items in ((DRIFT, info.drift_measurements), (SKEW, info.skew_measurements)):
            for item in items:
                distance = ("jensen_shannon_divergence"
                            if item.type == kinds.JENSEN_SHANNON_DIVERGENCE else "l_infinity")
                found.append(Measurement(feature, kind, item.value, item.threshold, TFDV,
                                         distance=distance))
    return found
