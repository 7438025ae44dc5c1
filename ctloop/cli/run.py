"""``ctloop run`` (one CT iteration on this machine) and ``ctloop config init`` (a starter
settings file for your data)."""

from __future__ import annotations

import contextlib
import datetime
import json
import re
from pathlib import Path

import click

from ctloop import contract
from ctloop.cli.common import (
    _CONFIG_ONLY,
    SERVING_PYTHON_ENV,
    _GroupedCommand,
    _pairs,
    _read_config,
    _terminal,
    end_command,
    find_serving_python,
)
from ctloop.errors import CtloopError
from ctloop.registry.base import PRODUCTION, STAGES, STAGING
from ctloop.settings import (
    COLD_START_POLICIES,
    MODEL_NAME,
    SLO,
    SPANS,
    STATS_SAMPLE_RATE,
    CanarySLO,
    DriftThresholds,
    Hyperparameters,
    Policy,
    Release,
    Thresholds,
)

# Every default below is ``ctloop.settings``' (as the pipeline's signature's): --help shows it, and
# a flag left unset is not passed at all, so the pipeline's default applies.


@click.command(cls=_GroupedCommand)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), is_eager=True,
              expose_value=False, callback=_read_config,
              help="A settings file (YAML) whose keys are the pipeline's parameters (data_uri, "
              "label, epochs, min_auc, ...); flags override it. `ctloop config init` writes one.")
@click.option("--local", "local_", is_flag=True, hidden=True,
              help="Kept for compatibility: runs are local (kfp.local) anyway.")
@click.option("--data", "data_uri", required=True,
              help="A CSV/Parquet file, a folder of them, a folder of span-<N>/ folders, or a "
              "pattern with {SPAN}/{VERSION} placeholders and * globs (data/span-{SPAN}/*.csv).")
@click.option("--spans", type=click.IntRange(min=1), default=SPANS, show_default=True,
              help="Read the latest N spans and concatenate them (a rolling range).")
@click.option("--s3-endpoint-url",
              help="S3-compatible endpoint for s3:// data (MinIO, SeaweedFS) [default: boto3's]; "
              "credentials come from boto3's standard chain (AWS_* variables, config files).")
@click.option("--label", required=True, help="The label column.")
@click.option("--task", default=contract.BINARY, show_default=True,
              type=click.Choice(contract.TASKS),
              help="What the model predicts: a 2-valued label, one of several classes, or a "
              "number. It sets the head, the loss and the metric that blesses.")
@click.option("--exclude", multiple=True, help="A column that is not a feature (repeatable).")
@click.option("--positive-label",
              help="Binary: the label value that is the positive class [default: the second of "
              "the two values in sorted order, e.g. 1 of 0/1, yes of no/yes].")
@click.option("--workdir", default="work", show_default=True, type=click.Path(file_okay=False),
              help="Holds pipeline_root/ (task outputs), registry/ (model versions) and logs/.")
@click.option("--registry", "registry_uri",
              help="The model registry: a folder, or s3://BUCKET/PREFIX (shared, as on a "
              "cluster; endpoint from --s3-endpoint-url) [default: WORKDIR/registry].")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
              help="Write the run summary (JSON) here.")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="Where the tasks' logs go: a file, or - for the terminal [default: "
              "WORKDIR/logs/run-<UTC time>.log]. A failed task's reason ends the output either "
              "way.")
@click.option("--verbose", is_flag=True,
              help="Stream the tasks' logs to the terminal (as --log -) instead of a progress "
              "view.")
@click.option("--runner", type=click.Choice(["in-process", "kfp-local"]), default="in-process",
              show_default=True,
              help="in-process: kfp.local orders the tasks and builds their inputs and outputs, "
              "and each task runs in this process (libraries imported once); kfp-local: each "
              "task a process of its own (kfp.local's SubprocessRunner), as KFP runs it.")
@click.option("--beam-arg", "beam_pipeline_args", multiple=True, metavar="ARG",
              help="A Beam pipeline option for the TFDV and TFMA steps (repeatable), e.g. "
              "--beam-arg=--direct_num_workers=2 --beam-arg=--direct_running_mode="
              "multi_processing; sets beam_pipeline_args [default: the in-process runner].")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option("--schema", "schema_uri", help="A curated TFDV schema (text proto).")
@click.option("--epochs", default=Hyperparameters.epochs, show_default=True)
@click.option("--batch-size", default=Hyperparameters.batch_size, show_default=True,
              help="Training rows per step.")
@click.option("--learning-rate", default=Hyperparameters.learning_rate, show_default=True,
              help="Adam's learning rate, in (0, 1).")
@click.option("--hidden-units", multiple=True, type=int, metavar="N",
              help="The size of a hidden layer, in order (repeatable, e.g. --hidden-units 128 "
              "--hidden-units 64) [default: "
              f"{', '.join(map(str, Hyperparameters.hidden_units))}].")
@click.option("--seed", default=Hyperparameters.seed, show_default=True,
              help="Seed of every random choice in training, for reproducible runs.")
@click.option("--early-stopping-patience", default=Hyperparameters.early_stopping_patience,
              show_default=True,
              help="Stop training after this many epochs without a better eval loss (0: off).")
@click.option("--user-module",
              help="A Python file defining build_model(features, train, hp, task) -> a compiled "
              "Keras model, which replaces the default model (local, gs:// or s3://).")
@click.option("--warm-start", is_flag=True,
              help="Start training from the serving version's weights when they fit (same task, "
              "classes, features, vocabularies and layers).")
@click.option("--slice-feature", "slice_features", multiple=True,
              help="An eval column to report metrics per value of (repeatable).")
@click.option("--drift-threshold", default=DriftThresholds.drift, show_default=True,
              help="Smallest Jensen-Shannon divergence of a feature from the previous span (on "
              "its bins) that is drift, once significant.")
@click.option("--skew-threshold", default=DriftThresholds.skew, show_default=True,
              help="Smallest Jensen-Shannon divergence between train and eval that is skew, once "
              "significant.")
@click.option("--false-alarm-rate", default=DriftThresholds.false_alarm_rate,
              show_default=True,
              help="The chance that unchanged data reports any drift or skew, over all features.")
@click.option("--anomaly-policy", "anomaly_policy", multiple=True, metavar="TYPE=block|warn",
              help="Downgrade an anomaly type to a warning, e.g. CTLOOP_DRIFT=warn or "
              "SCHEMA_NEW_COLUMN=warn (repeatable; unlisted types block).")
@click.option("--stats-sample-rate", default=STATS_SAMPLE_RATE, show_default=True,
              help="Share of rows TFDV statistics are computed on, in (0, 1].")
@click.option("--serving-python", envvar=SERVING_PYTHON_ENV,
              help="The python of the serving environment: infra validation runs the candidate "
              "in its KServe model server [default: $CTLOOP_SERVING_PYTHON, else the project's "
              ".venv/serving/bin/python that `make setup` builds].")
@click.option("--max-p99-ms", default=SLO.max_p99_ms, show_default=True,
              help="Infra SLO: p99 latency of single-row requests under "
              f"{SLO.concurrency} concurrent clients.")
@click.option("--min-rps", default=SLO.min_rps, show_default=True,
              help=f"Infra SLO: requests per second under {SLO.concurrency} concurrent clients.")
@click.option("--serving-url",
              help="A running `ctloop serve --registry --stage S` of --release-stage on this "
              "workdir's registry: the new version is released there with --release-strategy "
              "first, promoted or dropped on what it showed.")
@click.option("--canary-percent", default=CanarySLO.percent, show_default=True,
              help="The canary's share of the running server's requests.")
@click.option("--release-stage", default=STAGING, show_default=True,
              type=click.Choice(STAGES),
              help="The registry stage the run deploys to; production then moves only by "
              "`ctloop promote` (an approval), unless this says production.")
@click.option("--release-strategy", default=Release.strategy, show_default=True,
              type=click.Choice(Release.STRATEGIES),
              help="canary: a share of the clients; shadow: a copy of the requests, answers "
              "compared; blue_green: loaded beside, checked, switched at once.")
@click.option("--baseline-stage", default=PRODUCTION, show_default=True,
              type=click.Choice(STAGES),
              help="The stage whose version the candidate is evaluated against.")
@click.option("--min-auc", type=float,
              help="Binary: value threshold on eval AUC [default: none: the model must beat a "
              "constant predictor (AUC 0.5) by a margin that holds statistically].")
@click.option("--max-auc-decrease", default=Thresholds.max_auc_decrease, show_default=True,
              help="Binary: change threshold, the largest AUC drop allowed vs the serving model.")
@click.option("--min-accuracy", type=float,
              help="Multiclass: value threshold on eval accuracy [default: none: the model "
              "must beat always predicting the majority class].")
@click.option("--max-accuracy-decrease", default=Thresholds.max_accuracy_decrease,
              show_default=True,
              help="Multiclass: change threshold, the largest accuracy drop allowed vs the "
              "serving model.")
@click.option("--max-mae", type=float,
              help="Regression: value threshold, the largest eval mean absolute error, in the "
              "label's units [default: none: the model must beat always predicting the "
              "labels' median].")
@click.option("--max-mae-increase", type=float,
              help="Regression: change threshold, the largest MAE rise allowed vs the serving "
              "model, in the label's units [default: 1% of the serving model's MAE].")
@click.option("--cold-start", default=Policy.cold_start, show_default=True,
              type=click.Choice(COLD_START_POLICIES),
              help="With no serving model: bless a first model that passes its checks, or "
              "none.")
@click.option("--force-bless-reason",
              help="Bless whatever evaluation finds; the reason and the real verdict are "
              "recorded for audit.")
@click.pass_context
def run(ctx, local_, data_uri, spans, s3_endpoint_url, label, task, exclude, positive_label,
        workdir, registry_uri, summary_path, log_path, verbose, runner, model_name, schema_uri,
        epochs,
        batch_size, learning_rate, hidden_units, seed, early_stopping_patience, user_module,
        warm_start, slice_features, drift_threshold, skew_threshold, false_alarm_rate,
        anomaly_policy, stats_sample_rate, serving_python, max_p99_ms, min_rps, serving_url,
        canary_percent, min_auc, max_auc_decrease, min_accuracy, max_accuracy_decrease, max_mae,
        max_mae_increase, cold_start, force_bless_reason, beam_pipeline_args, release_stage,
        release_strategy, baseline_stage) -> None:
    """Run one continuous-training iteration on this machine (kfp.local).

    Settings come from flags, from a settings file (-c ctloop.yaml) under them, and from the
    pipeline's defaults under both.
    """
    from ctloop import drift
    from ctloop.local import preflight
    from ctloop.local import runner as local_run
    from ctloop.registry import open_registry, validate_model_name
    from ctloop.settings import NO_THRESHOLD, Hyperparameters, check_policy

    validate_model_name(model_name)
    serving_python = find_serving_python(ctx, serving_python)
    anomaly_policy = check_policy(
        _pairs(anomaly_policy, "--anomaly-policy", "SCHEMA_NEW_COLUMN=warn"))
    drift.Thresholds(drift_threshold, skew_threshold, false_alarm_rate)  # range checks, now
    # Train's own range checks; no --hidden-units: the default layers (the pipeline's too).
    Hyperparameters(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                    hidden_units=hidden_units or Hyperparameters.hidden_units, seed=seed,
                    early_stopping_patience=early_stopping_patience)
    thresholds = {"min_auc": min_auc, "max_auc_decrease": max_auc_decrease,
                  "min_accuracy": min_accuracy, "max_accuracy_decrease": max_accuracy_decrease,
                  "max_mae": max_mae, "max_mae_increase": max_mae_increase}
    preflight.check_settings(epochs, early_stopping_patience, thresholds, max_p99_ms, min_rps,
                             canary_percent, stats_sample_rate, schema_uri, force_bless_reason,
                             task, positive_label)
    columns = preflight.check_data(data_uri, label, list(exclude), spans, s3_endpoint_url, task)
    if user_module:
        from ctloop.user_module import load_user_module

        if "://" not in user_module:
            user_module = str(Path(user_module).resolve())
        load_user_module(user_module, s3_endpoint_url)  # imports, and defines build_model
    unknown = sorted(set(slice_features) - set(columns))
    if unknown:
        raise click.UsageError(f"--slice-feature {unknown} not among the data's columns "
                               f"({', '.join(columns)}); fix the column names")
    unknown = sorted(set(ctx.meta.get(_CONFIG_ONLY, {}).get("sensitive_features", []))
                     - set(columns))
    if unknown:
        raise click.UsageError(f"sensitive_features {unknown} not among the data's columns "
                               f"({', '.join(columns)}); fix the column names")
    params = {
        "data_uri": data_uri, "spans": spans, "s3_endpoint_url": s3_endpoint_url or "",
        "label": label, "exclude": list(exclude), "positive_label": positive_label or "",
        "model_name": model_name, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": learning_rate, "seed": seed, "task": task, "warm_start": warm_start,
        # The pipeline's float parameters cannot be None: NO_THRESHOLD (-1.0) means none.
        **{name: NO_THRESHOLD if value is None else value for name, value in thresholds.items()},
        "drift_threshold": drift_threshold, "skew_threshold": skew_threshold,
        "false_alarm_rate": false_alarm_rate, "anomaly_policy": anomaly_policy,
        "stats_sample_rate": stats_sample_rate, "max_p99_ms": max_p99_ms, "min_rps": min_rps,
        "serving_url": serving_url or "", "canary_percent": canary_percent,
        "cold_start": cold_start, "early_stopping_patience": early_stopping_patience,
        "slice_features": list(slice_features), "user_module": user_module or "",
        "force_bless_reason": force_bless_reason or "", "hidden_units": list(hidden_units),
        "beam_pipeline_args": list(beam_pipeline_args), "release_stage": release_stage,
        "release_strategy": release_strategy, "baseline_stage": baseline_stage,
    }
    # A flag left unset is not passed: the pipeline's default applies (the same value, both from
    # ctloop.settings). A settings file's value is a flag's default here (DEFAULT_MAP): passed.
    unset = click.core.ParameterSource.DEFAULT
    params = {name: value for name, value in params.items()
              if ctx.get_parameter_source(name) not in (None, unset)}
    params["serving_python"] = serving_python
    if registry_uri:
        if "://" not in registry_uri:
            registry_uri = str(Path(registry_uri).resolve())
        elif serving_url:
            raise click.UsageError(f"--serving-url needs a local --registry, not {registry_uri}: "
                                   "a local server follows a local registry")
        open_registry(registry_uri, model_name, s3_endpoint_url).versions()  # reachable
        params["registry_uri"] = registry_uri
    if schema_uri:
        params["schema_uri"] = str(Path(schema_uri).resolve())
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    for key, value in ctx.meta.get(_CONFIG_ONLY, {}).items():
        if key not in ctx.params or ctx.get_parameter_source(key) not in given:
            params[key] = value
    # No flag: like kserve_*, a setting of the `kserve` target (settings file, submit, schedules).
    # A local target's server records when started with `ctloop serve --record-dir`.
    if params.get("serving_record_uri") and params.get("serving_target", "local") == "local":
        raise click.UsageError("serving_record_uri records from the KServe predictor "
                               "(serving_target: kserve); locally start the server with "
                               "`ctloop serve --record-dir DIR` instead")
    if verbose:
        log_path = "-"
    if log_path is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        log_path = str(Path(workdir) / "logs" / f"run-{stamp}.log")
    with contextlib.ExitStack() as stack:
        progress = None
        if log_path != "-":  # else the tasks' own logs say what runs
            from ctloop.local.progress import TaskProgress

            progress = stack.enter_context(TaskProgress(_terminal(stack), local_run.TASKS))
        try:
            with local_run.output_to(None if log_path == "-" else log_path):
                summary = local_run.run(params, Path(workdir), listener=progress,
                                        runner=runner)
        except CtloopError:
            stack.close()  # the progress view ends before the error
            if log_path != "-":
                click.echo(f"task logs: {log_path}", err=True)
            raise
    from ctloop.local import report as local_report

    if summary.get("run_dir"):  # the Beam options validate-data and evaluate ran with
        summary["beam"] = local_report.beam_steps(Path(summary["run_dir"]))
    if summary_path:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(json.dumps(summary, indent=2))
    click.echo("\n".join(filter(None, [local_run.describe(summary),
                                       local_report.beam_line(summary.get("beam", {}))])))
    if log_path != "-":
        click.echo(f"task logs: {log_path}")
    end_command()


@click.group("config")
def config_group() -> None:
    """Settings files (YAML) for run, submit and schedules."""


@config_group.command("init")
@click.option("--data", "data_uri", required=True,
              help="Your data, as `ctloop run --data` takes it (a CSV/Parquet file, a folder, "
              "span-<N>/ folders); the first file read is examined.")
@click.option("--label", help="The label column [default: the column named like a label: "
              "label, target, y, class, churn, ...].")
@click.option("--model-name", help="The model's name [default: <label>-model].")
@click.option("--s3-endpoint-url", help="S3-compatible endpoint for s3:// data.")
@click.option("-o", "--output", default="ctloop.yaml", show_default=True,
              type=click.Path(dir_okay=False), help="The file to write.")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def config_init(data_uri, label, model_name, s3_endpoint_url, output, force) -> None:
    """Write a commented starter settings file for your data: the label guessed, the task
    inferred from its values, ID-like and constant columns proposed for exclusion."""
    import yaml

    from ctloop import config, starter
    from ctloop.local import preflight

    if Path(output).exists() and not force:
        raise click.UsageError(f"{output} exists; pass --force to overwrite it, or -o another "
                               "file")
    first, frame = preflight.read_first(data_uri, s3_endpoint_url)
    proposal = starter.propose(frame, label)
    if model_name is None:
        model_name = re.sub(r"[^a-z0-9]+", "-", proposal.label.lower()).strip("-")[:50] or "ctloop"
        model_name += "-model"
    text = starter.starter(data_uri, proposal, model_name)
    config.check(yaml.safe_load(text), output)  # what it writes, run accepts
    Path(output).write_text(text)
    guessed = "guessed" if label is None else "given"
    click.echo(f"wrote {output} from {first}:")
    click.echo(f"  label {proposal.label} ({guessed}), task {proposal.task} (label values: "
               f"{', '.join(proposal.label_values)})")
    for column, why in proposal.exclude.items():
        click.echo(f"  exclude {column}: {why}")
    click.echo(f"check it, then: ctloop run -c {output}")
