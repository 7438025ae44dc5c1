"""Checks of a candidate, and the one that needs no threshold: does it beat a predictor with no
skill on the same eval rows (a constant, the majority class, the labels' median), by a margin whose
one-sided 95% paired-bootstrap lower bound is above 0?"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

import numpy as np

from ctloop import contract
from ctloop.data.splits import Columns
from ctloop.errors import ModelError
from ctloop.settings import JUDGED

# The no-skill check: a paired bootstrap over the eval rows, seeded so that a rerun on the same
# rows decides the same; 1000 resamples put the 5th percentile within about 0.1 standard errors.
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95  # one-sided: the margin's lower bound is its 5th bootstrap percentile
PREDICT_ROWS = 4096  # rows per in-process call of the candidate's signature


@dataclasses.dataclass(frozen=True)
class Check:
    """A threshold applied on the overall slice (by TFMA, or the no-skill check), and how the
    candidate fared."""

    metric: str  # e.g. "auc", or "auc change vs serving model" (candidate - baseline)
    threshold: str  # e.g. "AUC >= 0.7"
    value: float | None  # None: it could not be computed
    passed: bool
    is_change: bool = False
    detail: str | None = None  # the no-skill check's: "beats no-skill by X, 95% lower bound Y"

    @property
    def shown(self) -> str:
        return f"{self.metric} = {_number(self.value, signed=self.is_change)}"


@dataclasses.dataclass(frozen=True)
class NoSkill:
    """The candidate against a predictor with no skill, on the same eval rows.

    ``margin`` is how much better the candidate is (AUC or accuracy: candidate - no-skill; MAE:
    no-skill - candidate), ``lower_bound`` its one-sided ``CONFIDENCE`` lower bound from a paired
    bootstrap over the rows. The check passes only when ``lower_bound`` > 0.
    """

    predictor: str  # e.g. "the majority class 'basic'"
    shown: str  # the judged metric as the report writes it
    no_skill: float | None
    candidate: float | None
    margin: float | None
    lower_bound: float | None
    resamples: int
    seed: int
    problem: str | None = None  # why the margin could not be measured (then it fails)

    @property
    def passed(self) -> bool:
        return self.problem is None and self.lower_bound is not None and self.lower_bound > 0

    @property
    def summary(self) -> str:
        if self.problem:
            return self.problem
        return (f"beats no-skill by {_number(self.margin, signed=True)}, "
                f"{CONFIDENCE:.0%} lower bound {_number(self.lower_bound, signed=True)} "
                f"({self.shown} {_number(self.candidate)} vs {_number(self.no_skill)})")

    def check(self) -> Check:
        return Check(f"{self.shown} margin over no-skill, {CONFIDENCE:.0%} lower bound",
                     f"{self.shown} beats no-skill ({self.predictor}: {self.shown} "
                     f"{_number(self.no_skill)})", self.lower_bound, self.passed,
                     is_change=True, detail=self.summary)


def predictions(model_dir: str, chunks: Iterable[tuple[Columns, np.ndarray]]
                ) -> tuple[np.ndarray, np.ndarray]:
    """The rows' labels and the model's answers, in order: ``chunks`` of ``(inputs, labels)``
    (``ctloop.data.splits.Split.chunks``) through the model's ``serving_default`` signature
    (``contract``) in-process, ``PREDICT_ROWS`` rows at a time. Answers are ``[rows]``, or
    ``[rows, classes]`` for multiclass; only they and the labels are kept, not the inputs."""
    import tensorflow as tf

    task, classes = contract.read_task(model_dir)
    signatures = tf.saved_model.load(model_dir).signatures
    if contract.SERVING_SIGNATURE not in signatures:
        raise ModelError(f"model {model_dir} has no {contract.SERVING_SIGNATURE!r} signature; "
                         "export it with ctloop's trainer")
    serve = signatures[contract.SERVING_SIGNATURE]
    labels, answers = [], []
    for inputs, chunk_labels in chunks:
        labels.append(chunk_labels)
        answers += [serve(**{name: tf.constant(values[start:start + PREDICT_ROWS])
                             for name, values in inputs.items()}
                          )[contract.OUTPUT_KEYS[task]].numpy()
                    for start in range(0, len(chunk_labels), PREDICT_ROWS)]
    if not answers:
        return np.zeros(0), np.zeros((0, len(classes)) if task == contract.MULTICLASS
                                     else (0,), np.float32)
    return np.concatenate(labels), np.concatenate(answers)


def no_skill(task: str, labels: np.ndarray, predicted: np.ndarray, categories: list[str],
             resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> NoSkill:
    """The candidate's margin over a no-skill predictor on the same rows, with its paired
    bootstrap lower bound.

    binary: any constant (e.g. the positive rate) has AUC 0.5, on every resample.
    multiclass: always the majority class of these rows, judged on accuracy.
    regression: always the median of these labels, judged on MAE.

    The multiclass and regression constants are chosen with the eval labels themselves: the
    majority class is the best constant for accuracy on these rows and the median the best
    constant for MAE, so no-skill is as strong as a constant can be there, which favours it,
    never the candidate (a conservative check).

    Args:
        task: The task type.
        labels: The eval rows' labels, as ingest encoded them.
        predicted: The candidate's answers for the same rows (``predictions``).
        categories: The label classes (multiclass: the names of the columns of ``predicted``).
        resamples: Bootstrap resamples of the rows.
        seed: The resampling's seed: the same rows and answers give the same bound.
    """
    judged = JUDGED[task]
    rows = len(labels)
    finite = np.isfinite(predicted).all(axis=-1) if predicted.ndim > 1 else \
        np.isfinite(predicted)
    if task == contract.BINARY:
        labels = labels.astype(np.int64)
        rate = _number(float(np.mean(labels)) if rows else None)
        predictor = f"a constant, e.g. the positive rate {rate}"
    elif task == contract.MULTICLASS:
        labels = labels.astype(np.int64)
        majority = int(np.bincount(labels).argmax()) if rows else 0
        name = categories[majority] if majority < len(categories) else str(majority)
        predictor = f"always the majority class {name!r}"
    else:
        labels = labels.astype(np.float64)
        median = float(np.median(labels)) if rows else 0.0
        predictor = f"always the eval labels' median {median:.4g}"

    def failed(problem: str) -> NoSkill:
        return NoSkill(predictor, judged.shown, None, None, None, None, resamples, seed,
                       problem)

    if not rows:
        return failed("no eval rows to compare the candidate with no-skill on")
    if not finite.all():
        return failed(f"the candidate answered NaN or infinity for {int((~finite).sum())} of "
                      f"{rows} eval rows: it cannot be shown to beat no-skill")
    rng = np.random.default_rng(seed)
    counts = (np.bincount(rng.integers(0, rows, rows), minlength=rows) for _ in range(resamples))
    if task == contract.BINARY:
        if labels.min() == labels.max():
            return failed(f"the eval rows hold one class only ({labels[0]}): AUC is undefined, "
                          "so the candidate cannot be shown to beat no-skill; evaluate on rows "
                          "of both classes")
        groups = np.unique(predicted.astype(np.float64), return_inverse=True)[1].ravel()
        baseline, candidate = 0.5, _auc(labels, groups)
        margins = np.array([_auc(labels, groups, weights) for weights in counts]) - baseline
    else:
        if task == contract.MULTICLASS:
            # Per row, 1 when right: the candidate's most probable class, and no-skill's.
            theirs = (labels == majority).astype(np.float64)
            ours = (predicted.argmax(axis=-1) == labels).astype(np.float64)
            gains = ours - theirs
        else:
            # Per row, how much smaller the candidate's absolute error is than no-skill's.
            theirs = np.abs(labels - median)
            ours = np.abs(labels - predicted.astype(np.float64))
            gains = theirs - ours
        baseline, candidate = float(theirs.mean()), float(ours.mean())
        margins = np.array([weights @ gains / rows for weights in counts])
    margins = margins[np.isfinite(margins)]  # a resample of one class has no AUC
    margin = candidate - baseline if judged.higher_is_better else baseline - candidate
    lower = float(np.quantile(margins, 1 - CONFIDENCE)) if len(margins) else None
    return NoSkill(predictor, judged.shown, baseline, candidate, float(margin), lower,
                   resamples, seed)


def _auc(labels: np.ndarray, groups: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The exact (weighted) AUC: the chance that a positive row scores above a negative one, a
    tie counting half. ``groups``: each row's rank among the distinct scores."""
    weights = np.ones(len(labels)) if weights is None else weights
    positives = np.bincount(groups, weights=weights * labels)
    negatives = np.bincount(groups, weights=weights * (1 - labels))
    pairs = positives.sum() * negatives.sum()
    if not pairs:
        return math.nan
    below = np.cumsum(negatives) - negatives
    return float(positives @ (below + negatives / 2) / pairs)


def _number(value: float | None, signed: bool = False, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:{'+' if signed else ''}.{digits}f}"
