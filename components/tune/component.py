"""KFP component: the hyperparameter search before training (Optuna), and its record."""

from typing import Dict, List, Optional

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def tune(
    train_data: Input[Dataset],
    schema: Input[Artifact],
    anomalies: Input[Artifact],
    data_valid: bool,
    label: str,
    task: str,
    best: Output[Artifact],
    history: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    trials: int,
    timeout_s: float,
    parallelism: int,
    validation_percent: int,
    space: Dict[str, dict],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    hidden_units: List[int],
    seed: int,
    early_stopping_patience: int,
    exclude: Optional[List[str]] = None,
    sensitive_features: Optional[List[str]] = None,
    train_on_sensitive_features: Optional[bool] = None,
    user_module: Optional[str] = None,
    s3_endpoint_url: Optional[str] = None,
    results: Optional[List[dict]] = None,
    started: Optional[float] = None,
):
    """Searches the trainer's hyperparameters (and a user module's own) for the task's blessing
    metric on a validation split of the train split; the final training uses the best. Off
    (``trials`` 0) or after a failed data validation it runs nothing and says so.

    Trial 0 is the configured hyperparameters, so a search that finds nothing better says so.
    Locally it runs every trial, ``parallelism`` at once in worker processes; given ``results``
    (a cluster's fan-out of tune_trial tasks, planned by tune_plan) it only picks among them.

    Args:
        train_data: The train split (the eval split is never seen).
        schema: validate_data's schema: the features and their types.
        anomalies: validate_data's anomalies (metadata ``summary``: why the data is blocked).
        data_valid: validate_data's verdict; False skips the search.
        label: The label column.
        task: ``binary`` (AUC), ``multiclass`` (accuracy) or ``regression`` (MAE): the metric
            the search optimizes is the one the blessing judges.
        best: Output: ``hyperparameters.json``: the chosen ``hyperparameters`` (train's
            tunables, ``user``: the user module's own), its trial, value and the configured
            one's, the verdict; ``trials.html``: the trials' plot and table, for the run's page;
            metadata ``tuned`` (False: no search ran), ``verdict``, ``trial``,
            ``hyperparameters``, ``stopped``.
        history: Output: ``trials.csv``, one row per trial (values, metric, epochs, seconds).
        report: Output: the trials' table and a plot of their values (HTML, inline SVG).
        metrics: Output: ``best``, ``configured``, ``trials``, ``seconds``,
            ``seconds_per_trial``.
        trials: How many trials (0: off).
        timeout_s: No trial starts after this many seconds of search.
        parallelism: Trials at once, locally (0: one per core; at most the cores).
        validation_percent: Share of the train split the trials are measured on.
        space: Hyperparameter -> ``{low, high[, log, step]}`` or ``{choices}``
            (``ctloop.tuning``).
        epochs: The configured epochs (trial 0; the rest of the space's base).
        batch_size: The configured batch size.
        learning_rate: The configured learning rate.
        hidden_units: The configured hidden layer sizes.
        seed: Seeds the sampler and every trial's training.
        early_stopping_patience: The configured patience (on the validation rows in trials).
        exclude: Columns that are not features.
        sensitive_features: Columns evaluated for fairness: not features either, unless
            ``train_on_sensitive_features`` (as train).
        train_on_sensitive_features: Train on the sensitive features too (None: False).
        user_module: A Python file whose ``build_model`` the trials train (None: the default).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` user module.
        results: A fan-out's trial results (tune_trial's outputs): pick among them, run none.
        started: With ``results``: when tune_plan started the search (epoch seconds).
    """
    import json
    import os
    import time

    from ctloop.components.tune import logic, outputs
    from ctloop.local import task_exit
    from ctloop.settings import Hyperparameters, Tune

    task_exit.install()

    skipped = None
    if not data_valid:
        skipped = "data validation blocked: " + str(
            anomalies.metadata.get("summary") or "see its anomalies report")
    elif not trials:
        skipped = "tuning off (tune_trials 0): the configured hyperparameters train"
    if skipped:
        print(f"tune skipped: {skipped}")
        outputs.skip(skipped, best.path, history.path, report.path)
        for artifact in (best, history, report, metrics):
            artifact.metadata["skipped"] = skipped
        best.metadata["tuned"] = False
        return
    # The settings file's range checks, for a caller that bypassed it.
    Tune(trials=trials, timeout_s=timeout_s, parallelism=parallelism,
         validation_percent=validation_percent)
    base = Hyperparameters(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        # A KFP list parameter holds JSON numbers, which arrive as floats.
        hidden_units=tuple(int(units) for units in hidden_units) or Hyperparameters.hidden_units,
        seed=seed, early_stopping_patience=early_stopping_patience)
    if results is not None:
        found = logic.pick(results, space, task, base, trials,
                           time.time() - (started or time.time()), len(results),
                           user_module or None)
    else:
        found = logic.search(
            train_data.path, os.path.join(schema.path, "schema.pbtxt"), label,
            [*(exclude or []), *([] if train_on_sensitive_features else sensitive_features or [])],
            task, list(train_data.metadata.get("label_classes", [])) or None, base, space,
            trials, timeout_s, parallelism, validation_percent, user_module or None,
            s3_endpoint_url or None)
    outputs.write(found, best.path, history.path, report.path)
    print(f"tune: {found.verdict()}; {found.stopped}")
    print("tune: the final training uses " + json.dumps(found.hyperparameters))
    best.metadata.update(tuned=True, verdict=found.verdict(), trial=found.chosen["number"],
                         hyperparameters=found.hyperparameters, stopped=found.stopped)
    metrics.log_metric("best", found.chosen["value"])
    if found.defaults:
        metrics.log_metric("configured", found.defaults["value"])
    metrics.log_metric("trials", len(found.trials))
    metrics.log_metric("seconds", found.seconds)
    metrics.log_metric("seconds_per_trial",
                       sum(t["seconds"] for t in found.trials) / len(found.trials))
