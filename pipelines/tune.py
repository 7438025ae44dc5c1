"""The CT pipeline's hyperparameter search before training: its tasks, and the best
hyperparameters train reads.

Compiled for a cluster (``conditions``): with ``tune_trials`` > 0, tune_plan proposes the trials,
a ParallelFor runs one tune_trial task per trial (build's ``tune_fan_out`` at once, from
``ctloop compile --tune-parallelism``: KFP's ParallelFor takes a constant, not a parameter), and
tune picks among their results (``dsl.Collected``); otherwise tune runs in the Else branch, and
skips. Locally (kfp.local cannot run dsl.If or ParallelFor) one tune task runs the whole search,
its trials in worker processes, and skips when ``tune_trials`` is 0.
"""

from __future__ import annotations

from kfp import dsl

from ctloop.components.tune.component import tune
from ctloop.components.tune_plan.component import tune_plan
from ctloop.components.tune_trial.component import tune_trial

# The search's components, in the order they run (compiled one by one too).
TUNING = (tune_plan, tune_trial, tune)

# The pipeline parameters of the search (the tune component's inputs of the same names
# without the prefix).
PARAMETERS = ("tune_trials", "tune_timeout_s", "tune_parallelism", "tune_space",
              "tune_validation_percent")
# The trainer's hyperparameters, which trial 0 keeps and the other trials replace.
CONFIGURED = ("epochs", "batch_size", "learning_rate", "hidden_units", "seed",
              "early_stopping_patience")
# What the trials train on, as train does: the same features (sensitive ones excluded as train
# excludes them, where the pipeline has fairness settings) and model builder.
DATA = ("label", "task", "exclude", "sensitive_features", "train_on_sensitive_features",
        "user_module", "s3_endpoint_url")


def tune_step(conditions: bool, parallelism: int, params: dict, ingested: dict, validated: dict):
    """Adds the search's tasks; returns ``(best, tasks)``: the channel of the best
    hyperparameters (tune's ``best``) and the tasks that read storage (a user module).

    ``parallelism``: trial tasks at once in the fan-out; ``params``: the pipeline's parameters by
    name (``PARAMETERS``, ``CONFIGURED``, ``DATA``); ``ingested``, ``validated``: ingest's and
    validate_data's outputs (the train split; the schema, anomalies and verdict).
    """
    train_data = ingested["train_data"]
    schema, anomalies = validated["schema"], validated["anomalies"]
    data_valid = validated["Output"]
    configured = {name: params[name] for name in CONFIGURED}
    data = dict(train_data=train_data, schema=schema,
                **{name: params[name] for name in DATA if name in params})
    searched = dict(**data, anomalies=anomalies, data_valid=data_valid,
                    **{name.removeprefix("tune_"): params[name] for name in PARAMETERS},
                    **configured)
    if not conditions:
        searched_task = tune(**searched).set_caching_options(True)
        return searched_task.outputs["best"], [searched_task]
    with dsl.If(params["tune_trials"] > 0, name="tuning"):
        # Not cached: it stamps when the search starts, which the trials' budget counts from.
        planned = tune_plan(task=params["task"], trials=params["tune_trials"],
                            space=params["tune_space"], user_module=params["user_module"],
                            **configured).set_caching_options(False)
        with dsl.ParallelFor(planned.outputs["trials"], parallelism=parallelism,
                             name="trials") as trial:
            tried = tune_trial(
                **data, trial=trial, started=planned.outputs["started"],
                timeout_s=params["tune_timeout_s"], space=params["tune_space"],
                validation_percent=params["tune_validation_percent"], **configured,
            ).set_caching_options(False)
        picked = tune(**searched, results=dsl.Collected(tried.output),
                      started=planned.outputs["started"]).set_caching_options(True)
    with dsl.Else(name="no-tuning"):
        skipped = tune(**searched).set_caching_options(True)
    return dsl.OneOf(picked.outputs["best"], skipped.outputs["best"]), [tried, picked, skipped]
