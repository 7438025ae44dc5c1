"""The evaluation's Markdown report: the verdict, each check, candidate vs baseline per metric and
slice."""

from __future__ import annotations

from typing import Any

from ctloop.components.evaluate import fairness
from ctloop.components.evaluate.logic import BASELINE, CANDIDATE, METRICS, Evaluation
from ctloop.components.evaluate.no_skill import CONFIDENCE, NoSkill, _number


def _cell(metric: str, value: float | None, signed: bool = False) -> str:
    return _number(value, signed, digits=0 if metric == "example_count" else 4)


def _no_skill_lines(skill: NoSkill, rows: float | None) -> list[str]:
    shown = skill.shown
    lines = ["## No-skill baseline", "",
             f"No value threshold is set, so the candidate must beat a predictor with no skill "
             f"on the same {_cell('example_count', rows)} eval rows ({skill.predictor}) by a "
             f"margin whose one-sided {CONFIDENCE:.0%} lower bound is above 0 (paired bootstrap "
             f"over the rows: {skill.resamples} resamples, seed {skill.seed}).", ""]
    if skill.problem:
        return lines + [f"Not measured: {skill.problem}.", ""]
    return lines + [
        f"| | {shown} |", "|---|---|",
        f"| no-skill | {_number(skill.no_skill)} |",
        f"| candidate | {_number(skill.candidate)} |",
        f"| margin (better is +) | {_number(skill.margin, signed=True)} |",
        f"| margin, {CONFIDENCE:.0%} lower bound | {_number(skill.lower_bound, signed=True)} |",
        "", f"The candidate {skill.summary}: "
        f"{'pass' if skill.passed else 'FAIL'}.", ""]


def report_markdown(evaluation: Evaluation, baseline_version: int | None, span: Any) -> str:
    """The verdict, each threshold, and candidate vs baseline per metric and slice (Markdown)."""
    verdict = "BLESSED" if evaluation.blessed else "NOT BLESSED"
    lines = [f"# Model evaluation: span {span}", ""]
    if evaluation.forced:
        tfma_verdict = "BLESSED" if evaluation.tfma_blessed else "NOT BLESSED"
        lines += [f"> **FORCE-BLESSED**: {evaluation.force_reason}", ">",
                  f"> The checks' verdict, recorded but not applied: "
                  f"**{tfma_verdict}**: {evaluation.tfma_reason}", ""]
    lines += [f"**{verdict}**: {evaluation.reason}", "", f"Task: {evaluation.task}.", ""]
    cold_start = BASELINE not in evaluation.slices
    if evaluation.incomparable:
        lines += [f"Baseline: serving version {baseline_version} cannot be compared: the "
                  "candidate alone, no change threshold applies.", ""]
    else:
        lines += ["Baseline: none (cold start): the candidate alone, no change threshold "
                  "applies." if cold_start else f"Baseline: serving version {baseline_version}.",
                  ""]
    names = list(METRICS[evaluation.task].values())
    scope = "overall slice; fairness: gaps between groups" if evaluation.fairness else \
        "overall slice"
    lines += [f"## Thresholds ({scope})", ""]
    if evaluation.checks:
        lines += ["| threshold | value | result |", "|---|---|---|"]
        lines += [f"| {c.threshold} | {c.shown} | {'pass' if c.passed else 'FAIL'} |"
                  for c in evaluation.checks]
    else:
        lines.append("None applies: nothing is blessed unless forced.")
    lines.append("")
    if evaluation.no_skill:
        lines += _no_skill_lines(evaluation.no_skill, evaluation.metrics.get("example_count"))
    if evaluation.fairness:
        lines += fairness.markdown(evaluation.fairness, baseline_version)

    def ordered(slices):  # overall first, then the slices by name
        return sorted(slices, key=lambda name: (name != "overall", name))

    candidate = evaluation.slices[CANDIDATE]
    if cold_start:
        lines += ["## Candidate", "", "| slice | " + " | ".join(names) + " |",
                  "|---" * (len(names) + 1) + "|"]
        for name in ordered(candidate):
            lines.append(f"| {name} | " + " | ".join(
                _cell(m, candidate[name].get(m)) for m in names) + " |")
        lines.append("")
        return "\n".join(lines)
    baseline = evaluation.slices[BASELINE]
    for metric in names:
        lines += [f"## {metric}", "",
                  f"| slice | candidate | baseline (v{baseline_version}) | candidate − baseline |",
                  "|---|---|---|---|"]
        for name in ordered(set(candidate) | set(baseline)):
            lines.append(
                f"| {name} | {_cell(metric, candidate.get(name, {}).get(metric))} | "
                f"{_cell(metric, baseline.get(name, {}).get(metric))} | "
                f"{_cell(metric, evaluation.diffs.get(name, {}).get(metric), signed=True)} |")
        lines.append("")
    return "\n".join(lines)
