"""KFP component: TFMA evaluation against the serving model, and the blessing."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import (
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    eval_data: Input[Dataset],
    baseline: Input[Model],
    data_valid: bool,
    label: str,
    blessing: Output[Artifact],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    classification_metrics: Output[ClassificationMetrics],
    report: Output[Markdown],
    min_auc: float,
    max_auc_decrease: float,
    min_accuracy: float,
    max_accuracy_decrease: float,
    max_mae: float,
    max_mae_increase: float,
    cold_start: str,
    max_fpr_gap: float,
    max_tpr_gap: float,
    max_fairness_gap_increase: float,
    min_group_size: int,
    force_bless_reason: Optional[str] = None,
    slice_features: Optional[List[str]] = None,
    sensitive_features: Optional[List[str]] = None,
    beam_pipeline_args: Optional[List[str]] = None,
) -> bool:
    """Evaluates the candidate with TFMA and blesses it if it passes the thresholds.

    The task (binary, multiclass, regression) is the model's own (its ``features.json``); it
    decides the metrics and which pair of thresholds judges: AUC, accuracy or mean absolute
    error.

    The baseline is the serving version ``load_baseline`` resolved for this run (the one model
    every task of the run is judged against). With no value threshold of the task set, the
    candidate must beat a no-skill predictor on the same eval rows (binary: a constant, AUC
    0.5; multiclass: the majority class; regression: the labels' median) by a margin whose
    one-sided 95% paired-bootstrap lower bound is above 0, with or without a serving model:
    guessing is never blessed.

    With ``sensitive_features``, every group of those columns is measured in the same TFMA pass
    (binary: positive rate, TPR, FPR with 95% intervals, AUC; else the judged metric), with the
    gaps between groups; fairness thresholds (binary) join the blessing.

    A gate: with ``data_valid`` False (data validation blocked, so nothing was trained), nothing
    is evaluated or blessed; the task says so in its log and in its outputs' metadata
    ``skipped``.

    Args:
        model: The candidate SavedModel.
        eval_data: The eval split.
        baseline: The serving version's SavedModel (``load_baseline``'s ``model``; metadata
            ``version``, None on a cold start: no baseline).
        data_valid: validate_data's verdict; False skips the evaluation (not blessed).
        label: The label column.
        blessing: Output: metadata ``blessed``, ``reason``, ``forced``, ``force_reason``,
            ``tfma_blessed``, ``tfma_reason``, ``checks``, ``metrics``, ``baseline_version``,
            ``baseline_metrics``, ``task``, ``incomparable`` (why the baseline could not be
            compared, or None), ``no_skill`` (the no-skill and candidate values, the margin and
            its bootstrap lower bound; None when a value threshold judged), ``fairness`` (every
            group's numbers and the gaps) and ``decided_by`` (the failed checks), both only with
            sensitive features; ``beam`` (the Beam options TFMA ran with: ``runner``,
            ``workers``, ``running_mode``, ``args``); when skipped, ``blessed`` None and
            ``skipped`` (why).
        evaluation: Output: TFMA's output folder (metrics, plots, validations); metadata
            ``beam``.
        metrics: Output: the candidate's overall metrics, as the KFP UI shows them.
        classification_metrics: Output: a classifier's confusion matrix (binary: at threshold
            0.5, with the ROC curve; multiclass: of the most probable class), from TFMA's plots.
            Empty for regression.
        report: Output: the verdict, each threshold with pass/fail, the no-skill comparison,
            and candidate vs baseline (and their difference) per metric, overall and per slice.
        min_auc: Binary value threshold: the candidate's AUC must reach it (-1.0: none, the
            no-skill check judges). Every threshold below is off when exactly -1.0 (a pipeline
            parameter cannot be None); any other negative value is refused.
        max_auc_decrease: Binary change threshold: how far AUC may fall below the serving
            model's (-1.0: none).
        min_accuracy: Multiclass value threshold on accuracy (-1.0: none, the no-skill check
            judges).
        max_accuracy_decrease: Multiclass change threshold: how far accuracy may fall below the
            serving model's (-1.0: none).
        max_mae: Regression value threshold: the candidate's mean absolute error must not
            exceed it, in the label's units (-1.0: none, the no-skill check judges).
        max_mae_increase: Regression change threshold: how far the MAE may rise above the
            serving model's, in the label's units (-1.0: at most 1% above it).
        cold_start: With no serving model: ``bless_on_thresholds`` blesses a candidate that
            passes its checks, ``require_baseline`` blesses none.
        max_fpr_gap: Binary: the largest false positive rate gap between two groups of a
            sensitive feature (-1.0: none).
        max_tpr_gap: Binary: the largest true positive rate gap, likewise (-1.0: none).
        max_fairness_gap_increase: Binary: how much either gap may exceed the serving model's
            over the same groups (-1.0: none).
        min_group_size: The fewest rows in a rate's denominator for a group to be judged on it;
            smaller groups are reported, not judged.
        force_bless_reason: When not empty, bless the candidate whatever the verdict, recorded
            with this reason; TFMA still runs and the verdict it overrode is kept.
        slice_features: Features to report metrics per value of.
        sensitive_features: Eval columns whose groups are compared for fairness (None: none).
        beam_pipeline_args: Beam options for TFMA (runner, workers, ...); empty: in-process
            (``ctloop.beam_options.resolve``, by the eval split's row count).

    Returns:
        Whether the candidate is blessed.
    """
    import dataclasses
    import os

    from ctloop.components.evaluate import logic
    from ctloop.components.evaluate import report as markdown
    from ctloop.local import task_exit

    task_exit.install()

    version = baseline.metadata.get("version")  # KFP hands numbers back as floats
    version = None if version is None else int(version)
    if not data_valid:
        skipped = str(model.metadata.get("skipped") or "data validation blocked")
        print(f"evaluate skipped: {skipped}")
        blessing.metadata.update(blessed=None, reason=f"skipped: {skipped}", skipped=skipped,
                                 metrics={}, baseline_version=version, baseline_metrics={})
        with open(blessing.path, "w") as handle:
            handle.write("NOT_BLESSED\n")
        with open(report.path, "w") as handle:
            handle.write(f"# Evaluation\n\nSkipped: {skipped}.\n")
        os.makedirs(evaluation.path, exist_ok=True)
        return False
    thresholds = logic.Thresholds.from_parameters(
        min_auc=min_auc, max_auc_decrease=max_auc_decrease, min_accuracy=min_accuracy,
        max_accuracy_decrease=max_accuracy_decrease, max_mae=max_mae,
        max_mae_increase=max_mae_increase)
    policy = logic.Policy(cold_start, force_bless_reason)
    fairness = logic.Fairness.from_parameters(
        sensitive_features=sensitive_features, max_fpr_gap=max_fpr_gap, max_tpr_gap=max_tpr_gap,
        max_fairness_gap_increase=max_fairness_gap_increase, min_group_size=min_group_size)
    result = logic.run(
        model_dir=model.path,
        eval_path=eval_data.path,
        label=label,
        baseline_dir=baseline.path if version is not None else None,
        thresholds=thresholds,
        output_dir=evaluation.path,
        slice_features=slice_features,
        beam_pipeline_args=beam_pipeline_args,
        policy=policy,
        fairness=fairness,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    views = result.views
    if views:
        classification_metrics.log_confusion_matrix(views.categories, views.confusion_matrix)
    if views and views.thresholds:
        classification_metrics.log_roc_curve(views.fpr, views.tpr, views.thresholds)
    blessing.metadata.update(
        blessed=result.blessed, reason=result.reason, forced=result.forced,
        force_reason=result.force_reason, tfma_blessed=result.tfma_blessed,
        tfma_reason=result.tfma_reason, checks=[dataclasses.asdict(c) for c in result.checks],
        metrics=result.metrics, baseline_version=version,
        baseline_metrics=result.baseline_metrics, task=result.task,
        incomparable=result.incomparable,
        no_skill={**dataclasses.asdict(result.no_skill), "passed": result.no_skill.passed,
                  "summary": result.no_skill.summary} if result.no_skill else None,
    )
    blessing.metadata["beam"] = evaluation.metadata["beam"] = result.beam
    print(f"evaluate: Beam {result.beam['runner']}, {result.beam['workers']} worker(s) "
          f"({result.beam['running_mode']}); options {result.beam['args']}")
    if result.fairness:  # off: the metadata is what it was before fairness existed
        blessing.metadata.update(fairness=dataclasses.asdict(result.fairness),
                                 decided_by=[c.metric for c in result.checks if not c.passed])
    with open(blessing.path, "w") as handle:
        handle.write("BLESSED\n" if result.blessed else "NOT_BLESSED\n")
    with open(report.path, "w") as handle:
        handle.write(markdown.report_markdown(
            result, version, eval_data.metadata.get("span")))
    return result.blessed
