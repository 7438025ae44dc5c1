"""Fairness over sensitive columns, from the per-slice metrics of evaluate's one TFMA pass.

Each value of a sensitive column is a group (one TFMA slice). For a binary model every group gets
its confusion counts at the decision threshold (TFMA's ``TruePositives`` ... ``FalseNegatives``,
the counts TFMA's FairnessIndicators metric is made of), hence its positive rate, true positive
rate and false positive rate with 95% Wilson intervals, and its AUC; for multiclass and
regression, the judged metric (accuracy, MAE). Between the groups of a column, the gap of each
rate (highest - lowest, both groups named, with Newcombe's 95% interval of their difference) and
its ratio (lowest / highest).

The rule for small groups: a group takes part in a rate's gap only with at least
``min_group_size`` rows in that rate's denominator (rows, positives, negatives); smaller groups
are reported with their interval and named as not judged. A threshold whose gap has fewer than
two judged groups cannot be shown to hold, and fails (unknown state blocks), as does a missing
count. The gap is judged on its point estimate: judging the interval's lower bound would pass
any gap where data is thin, its upper bound would block nearly every model on groups of tens of
rows; the minimum size keeps the point estimate meaningful, the interval says how sure it is.
"""

from __future__ import annotations

import dataclasses
import math

from ctloop import contract
from ctloop.components.evaluate.no_skill import Check, _number
from ctloop.settings import JUDGED, Fairness

# TFMA metric class -> its value's name: the counts at the 0.5 decision threshold.
COUNTS = {"TruePositives": "true_positives", "FalsePositives": "false_positives",
          "TrueNegatives": "true_negatives", "FalseNegatives": "false_negatives"}
Z = 1.959963984540054  # two-sided 95%
# Rate -> (as the report writes it, its denominator, the threshold that bounds its gap).
RATES = {
    "false_positive_rate": ("false positive rate", "negatives", "max_fpr_gap"),
    "true_positive_rate": ("true positive rate", "positives", "max_tpr_gap"),
    "positive_rate": ("positive rate", "rows", None),
}


@dataclasses.dataclass(frozen=True)
class Rate:
    value: float | None  # None: no row in its denominator
    low: float | None  # its 95% Wilson interval
    high: float | None
    trials: int  # the denominator's rows


@dataclasses.dataclass(frozen=True)
class Group:
    name: str  # the slice, e.g. "Gender=Female"
    rows: int
    positives: int | None  # binary only
    rates: dict[str, Rate]  # binary only: RATES' keys
    metric: float | None  # the task's judged metric (AUC, accuracy, MAE) on the group's rows


@dataclasses.dataclass(frozen=True)
class Gap:
    feature: str
    rate: str  # a RATES key, or the judged metric for multiclass and regression
    high: str | None  # the group with the highest value, and the lowest (None: not judged)
    low: str | None
    high_value: float | None
    low_value: float | None
    gap: float | None  # high_value - low_value
    ci_low: float | None  # Newcombe's 95% interval of that difference (rates only)
    ci_high: float | None
    ratio: float | None  # low_value / high_value
    judged: list[str]  # the groups large enough to judge
    too_small: list[str]  # the others, with their denominator: "Marital=widow (7 negatives)"
    baseline_gap: float | None = None  # the serving model's, over the same groups

    @property
    def shown(self) -> str:
        return RATES[self.rate][0] if self.rate in RATES else self.rate

    def between(self) -> str:
        return (f"{self.shown} gap {_number(self.gap)} between {self.high} "
                f"({_number(self.high_value)}) and {self.low} ({_number(self.low_value)})")


@dataclasses.dataclass(frozen=True)
class Result:
    task: str
    min_group_size: int
    groups: dict[str, list[Group]]  # sensitive column -> its groups (the candidate's)
    baseline_groups: dict[str, list[Group]]  # the same for the serving model ({}: none)
    gaps: list[Gap]


def wilson(successes: int, trials: int) -> tuple[float | None, float | None]:
    """The 95% Wilson score interval of a proportion (sound for small ``trials``)."""
    if trials <= 0:
        return None, None
    p = successes / trials
    spread = Z * Z / trials
    centre = (p + spread / 2) / (1 + spread)
    half = Z * math.sqrt(p * (1 - p) / trials + spread / (4 * trials)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(high: Rate, low: Rate) -> tuple[float, float]:
    """Newcombe's hybrid score 95% interval of ``high.value - low.value`` from the two Wilson
    intervals (independent groups)."""
    gap = high.value - low.value
    return (gap - math.hypot(high.value - high.low, low.high - low.value),
            gap + math.hypot(high.high - high.value, low.value - low.low))


def _group(name: str, metrics: dict[str, float], task: str) -> Group:
    judged = metrics.get(JUDGED[task].metric)
    if task != contract.BINARY:
        return Group(name, int(metrics.get("example_count", 0)), None, {}, judged)
    counts = {key: metrics.get(key) for key in COUNTS.values()}
    if None in counts.values():  # TFMA reported no count: nothing can be judged on the group
        return Group(name, int(metrics.get("example_count", 0)), None, {}, judged)
    tp, fp, tn, fn = (int(round(counts[k])) for k in COUNTS.values())
    rates = {}
    for rate, (hits, trials) in {"false_positive_rate": (fp, fp + tn),
                                 "true_positive_rate": (tp, tp + fn),
                                 "positive_rate": (tp + fp, tp + fp + tn + fn)}.items():
        rates[rate] = Rate(hits / trials if trials else None, *wilson(hits, trials), trials)
    return Group(name, tp + fp + tn + fn, tp + fn, rates, judged)


def groups_of(features: list[str], slices: dict[str, dict[str, float]], task: str
              ) -> dict[str, list[Group]]:
    """Each sensitive column's groups, from one model's metrics per slice name."""
    return {feature: [_group(name, slices[name], task) for name in sorted(slices)
                      if name.startswith(f"{feature}=")] for feature in features}


def _value(group: Group, rate: str) -> Rate | None:
    if rate in RATES:
        return group.rates.get(rate)
    return Rate(group.metric, None, None, group.rows)


def _gap(feature: str, rate: str, groups: list[Group], baseline: list[Group],
         min_size: int) -> Gap:
    denominator = RATES[rate][1] if rate in RATES else "rows"
    judged, too_small = [], []
    for group in groups:
        value = _value(group, rate)
        if value is None or value.trials < min_size or value.value is None:
            trials = value.trials if value else 0
            too_small.append(f"{group.name} ({trials} {denominator})")
        else:
            judged.append((value.value, group.name, value))
    if len(judged) < 2:
        return Gap(feature, rate, None, None, None, None, None, None, None, None,
                   [name for _, name, _ in judged], too_small)
    (low_value, low, low_rate), (high_value, high, high_rate) = min(judged), max(judged)
    ci = newcombe(high_rate, low_rate) if rate in RATES else (None, None)
    names = [name for _, name, _ in judged]
    theirs = {g.name: _value(g, rate) for g in baseline}
    values = [theirs[name].value if theirs.get(name) else None for name in names]
    baseline_gap = (max(values) - min(values)) if baseline and None not in values else None
    return Gap(feature, rate, high, low, high_value, low_value, high_value - low_value, *ci,
               low_value / high_value if high_value else None, names, too_small, baseline_gap)


def measure(fairness: Fairness, slices: dict[str, dict[str, dict[str, float]]], task: str,
            candidate: str, baseline: str | None) -> Result:
    """Every group's numbers and the gaps between them, for the candidate (and the serving
    model's gaps over the same groups). ``slices``: model name -> slice name -> metrics."""
    features = list(fairness.sensitive_features)
    groups = groups_of(features, slices[candidate], task)
    theirs = groups_of(features, slices[baseline], task) if baseline else {}
    rates = list(RATES) if task == contract.BINARY else [JUDGED[task].metric]
    gaps = [_gap(feature, rate, groups[feature], theirs.get(feature, []),
                 fairness.min_group_size) for feature in features for rate in rates]
    return Result(task, fairness.min_group_size, groups, theirs, gaps)


def checks(fairness: Fairness, result: Result, with_baseline: bool) -> list[Check]:
    """The fairness thresholds, one check per sensitive column and bounded gap; a gap that
    cannot be measured fails."""
    applied = []
    increase = fairness.max_fairness_gap_increase if with_baseline else None
    for gap in result.gaps:
        bound = RATES.get(gap.rate, (None, None, None))[2]
        if bound is None:  # the positive rate and other tasks' metrics: reported, not judged
            continue
        limit = fairness.thresholds.get(bound)
        unknown = None
        if gap.gap is None:
            unknown = (f"fewer than two groups of {gap.feature} have >= {result.min_group_size} "
                       f"{RATES[gap.rate][1]} ({', '.join(gap.too_small) or 'no group'}): it "
                       "cannot be shown to hold; lower min_group_size or evaluate on more rows")
        small = f"; not judged (too small): {', '.join(gap.too_small)}" if gap.too_small else ""
        if limit is not None:
            detail = unknown or (f"{gap.between()}, 95% CI [{_number(gap.ci_low)}, "
                                 f"{_number(gap.ci_high)}]{small}")
            applied.append(Check(f"{gap.shown} gap over {gap.feature}",
                                 f"{gap.shown} gap <= {bound} {limit}", gap.gap,
                                 gap.gap is not None and gap.gap <= limit, detail=detail))
        if increase is not None:
            change = (None if gap.gap is None or gap.baseline_gap is None
                      else gap.gap - gap.baseline_gap)
            detail = unknown or (
                f"{gap.between()}; the serving model's gap over the same groups "
                f"{_number(gap.baseline_gap)}" if change is not None else
                "the serving model's gap could not be measured over the same groups")
            applied.append(Check(
                f"{gap.shown} gap over {gap.feature} change vs serving model",
                f"{gap.shown} gap <= serving model's + max_fairness_gap_increase {increase}",
                change, change is not None and change <= increase, is_change=True,
                detail=detail))
    return applied


def markdown(result: Result, baseline_version: int | None) -> list[str]:
    """The report's fairness section: every group's numbers, then the gaps."""
    binary = result.task == contract.BINARY
    shown = JUDGED[result.task].shown
    lines = ["## Fairness", ""]
    if binary:
        lines += [f"Rates at the decision threshold 0.5 with 95% Wilson intervals. A group is "
                  f"judged on a rate only with >= {result.min_group_size} rows in its "
                  "denominator (rows for the positive rate, positives for the TPR, negatives "
                  "for the FPR); smaller groups are reported, not judged.", "",
                  f"| group | rows | positives | positive rate | TPR | FPR | {shown} |",
                  "|---|---|---|---|---|---|---|"]
    else:
        lines += [f"{shown} per group; a group is judged only with >= {result.min_group_size} "
                  "rows.", "", f"| group | rows | {shown} |", "|---|---|---|"]

    def rate(value: Rate | None) -> str:
        if value is None or value.value is None:
            return "n/a"
        mark = "" if value.trials >= result.min_group_size else " (too small)"
        return f"{_number(value.value)} [{_number(value.low, digits=2)}, " \
               f"{_number(value.high, digits=2)}]{mark}"

    for groups in result.groups.values():
        for group in groups:
            if binary:
                cells = [rate(group.rates.get(r)) for r in
                         ("positive_rate", "true_positive_rate", "false_positive_rate")]
                positives = "n/a" if group.positives is None else group.positives
                lines.append(f"| {group.name} | {group.rows} | {positives} | "
                             + " | ".join(cells) + f" | {_number(group.metric)} |")
            else:
                lines.append(f"| {group.name} | {group.rows} | {_number(group.metric)} |")
    serving = f"serving model's (v{baseline_version})" if result.baseline_groups else None
    lines += ["", "| column | measure | gap (highest − lowest) | 95% CI | ratio (lowest / "
              "highest) | " + (f"{serving} gap | " if serving else "") + "not judged (too small) |",
              "|---|---|---|---|---|" + ("---|" if serving else "") + "---|"]
    for gap in result.gaps:
        between = (f"{_number(gap.gap)}: {gap.high} {_number(gap.high_value)}, {gap.low} "
                   f"{_number(gap.low_value)}" if gap.gap is not None else "n/a: fewer than "
                   "two groups to judge")
        ci = (f"[{_number(gap.ci_low)}, {_number(gap.ci_high)}]" if gap.ci_low is not None
              else "n/a")
        lines.append(f"| {gap.feature} | {gap.shown} | {between} | {ci} | "
                     f"{_number(gap.ratio)} | " + (f"{_number(gap.baseline_gap)} | " if serving
                                                   else "")
                     + f"{', '.join(gap.too_small) or 'none'} |")
    return lines + [""]
