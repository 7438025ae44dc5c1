"""The ``ctloop`` command line: one command per noun.

Heavy libraries (TensorFlow, TFDV, kfp, kserve) are imported inside the commands that use them:
``ctloop serve`` runs in the serving environment, which has no kfp or TFDV at all.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import re
import sys
from pathlib import Path

import click

from ctloop import compiling
from ctloop.errors import CtloopError

DEFAULT_PIPELINE_YAML = compiling.PIPELINE_YAML


class _Group(click.Group):
    """Turns ctloop's domain errors into one-line usage errors instead of tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CtloopError as exc:
            raise click.ClickException(str(exc)) from exc


SERVING_PYTHON_ENV = "CTLOOP_SERVING_PYTHON"
# ctx.meta key: settings of the config file that no flag of `run` carries (passed on as they are).
_CONFIG_ONLY = "ctloop.config_only"

# `ctloop run --help` in sections; an option not listed here is under "Other".
_SECTIONS = {
    "Data": ("config_path", "data_uri", "spans", "s3_endpoint_url", "label", "task", "exclude",
             "positive_label", "schema_uri"),
    "Model": ("model_name", "epochs", "batch_size", "learning_rate", "hidden_units", "seed",
              "early_stopping_patience", "user_module", "warm_start"),
    "Gates": ("drift_threshold", "skew_threshold", "false_alarm_rate", "anomaly_policy",
              "stats_sample_rate", "slice_features", "min_auc", "max_auc_decrease",
              "min_accuracy", "max_accuracy_decrease", "max_mae", "max_mae_increase",
              "cold_start", "force_bless_reason"),
    "Serving": ("serving_python", "max_p99_ms", "min_rps", "serving_url", "canary_percent",
                "registry_uri"),
    "Output": ("workdir", "summary_path", "log_path", "verbose", "runner"),
}


class _GroupedCommand(click.Command):
    """A command whose --help lists its options in sections (``_SECTIONS``)."""

    def format_options(self, ctx, formatter):
        records = {p.name: p.get_help_record(ctx) for p in self.get_params(ctx)}
        placed = set()
        for title, names in _SECTIONS.items():
            rows = [records[n] for n in names if records.get(n)]
            placed.update(names)
            if rows:
                with formatter.section(f"{title} options"):
                    formatter.write_dl(rows)
        rest = [r for n, r in records.items() if r and n not in placed]
        if rest:
            with formatter.section("Other options"):
                formatter.write_dl(rest)


def _read_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Reads -c FILE before any other option: its values become the options' defaults (so flags
    override them), and the settings no flag carries are kept for the run as they are."""
    if value is None:
        return
    from ctloop import config

    try:
        values = config.load(value)
    except CtloopError as exc:
        raise click.ClickException(str(exc)) from exc
    flags = {p.name for p in ctx.command.params}
    defaults, only = {}, {}
    for key, item in values.items():
        if key == "anomaly_policy":
            item = [f"{k}={v}" for k, v in item.items()]
        # A threshold turned off (-1.0) has no flag value: the flag's None means its default.
        if key in flags and not (key in config.THRESHOLDS and item == config.NO_THRESHOLD):
            defaults[key] = item
        else:
            only[key] = item
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    ctx.meta[_CONFIG_ONLY] = only


def project_serving_python() -> Path:
    """The serving environment `make setup` builds beside this package's source tree."""
    import ctloop

    return Path(ctloop.__file__).resolve().parent.parent / ".venv" / "serving" / "bin" / "python"


def find_serving_python(ctx: click.Context, given: str | None) -> str:
    """The serving environment's python: --serving-python, else $CTLOOP_SERVING_PYTHON, else the
    config file's serving_python, else the project's own; one line saying how to get one."""
    if given:
        source = ctx.get_parameter_source("serving_python")
        named = f"{SERVING_PYTHON_ENV}={given}" if (
            source == click.core.ParameterSource.ENVIRONMENT) else f"--serving-python {given}"
        if not Path(given).is_file():
            raise click.UsageError(f"{named} does not exist; pass the python of the serving "
                                   "environment, or create the project's with `make setup`")
        return given
    own = project_serving_python()
    if not own.is_file():
        raise click.UsageError(f"no serving environment: {own} does not exist; create it with "
                               f"`make setup`, or pass --serving-python (or {SERVING_PYTHON_ENV})")
    return str(own)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
def main(verbose: bool) -> None:
    """Continuous training on Kubeflow Pipelines: TFDV, TF, TFMA and KServe."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write span-<N>/data.<format> into.")
@click.option("--spans", default=3, show_default=True, help="How many spans to write.")
@click.option("--first-span", default=1, show_default=True, help="Number of the first span.")
@click.option("--rows", default=5000, show_default=True, help="Rows per span.")
@click.option("--seed", default=42, show_default=True, help="Seed: same seed, same bytes.")
@click.option("--drift", default=0.0, show_default=True,
              help="0..1: shift feature distributions (covariate drift).")
@click.option("--corrupt", default=0.0, show_default=True,
              help="0..1: share of rows with out-of-range numbers and unseen categories.")
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv",
              show_default=True)
def datagen(out_dir, spans, first_span, rows, seed, drift, corrupt, fmt) -> None:
    """Write deterministic subscription-churn spans (label: churned)."""
    from ctloop import datagen as generator

    for path in generator.write_spans(
        out_dir, spans, first_span=first_span, rows=rows, seed=seed, drift=drift,
        corrupt=corrupt, fmt=fmt,
    ):
        click.echo(str(path))


@main.command("compile")
@click.option("--output", type=click.Path(dir_okay=False),
              help="Where to write the pipeline's IR YAML [default: pipelines/ct_pipeline.yaml, "
              "with --gpu pipelines/ct_pipeline_gpu.yaml].")
@click.option("--components-dir", type=click.Path(file_okay=False),
              help="Where to write each component as its own reusable component YAML, "
              "<name>.yaml [default: components/ beside --output].")
@click.option("--image", default=None,
              help="Pipeline image for every task (default: ctloop-pipeline:<version>).")
@click.option("--gpu", is_flag=True,
              help="The GPU variant: the train task requests gpu_count GPUs (default 1) on GPU "
              "nodes, tolerates their taint, gets a memory-backed /dev/shm and the GPU image.")
@click.option("--gpu-image", help="The GPU variant's train image [default: "
              "ctloop-pipeline-gpu:<version>].")
@click.option("--gpu-node-selector", "node_selector", multiple=True, metavar="LABEL=VALUE",
              help="A node label GPU nodes carry (repeatable) [default: "
              "nvidia.com/gpu.present=true, set by NVIDIA's GPU operator].")
@click.option("--gpu-toleration", "tolerations", multiple=True, metavar="KEY:EFFECT",
              help="A taint of GPU nodes to tolerate (repeatable) [default: "
              "nvidia.com/gpu:NoSchedule].")
@click.option("--shm-size", default="2Gi", show_default=True,
              help="Size of the GPU variant's memory-backed /dev/shm.")
def compile_(output: str | None, components_dir: str | None, image: str | None, gpu: bool,
             gpu_image: str | None, node_selector: tuple[str, ...], tolerations: tuple[str, ...],
             shm_size: str) -> None:
    """Compile the CT pipeline, and each of its components, to KFP IR YAML."""
    settings = None
    if gpu:
        settings = _gpu_settings(gpu_image, node_selector, tolerations, shm_size)
    elif gpu_image or node_selector or tolerations:
        raise click.UsageError("--gpu-image, --gpu-node-selector and --gpu-toleration need --gpu")
    output = output or str(compiling.PIPELINE_GPU_YAML if gpu else DEFAULT_PIPELINE_YAML)
    compiling.compile_pipeline(Path(output), image, settings)
    click.echo(f"wrote {output}")
    folder = Path(components_dir) if components_dir else Path(output).parent / "components"
    for path in compiling.compile_components(folder, image):
        click.echo(f"wrote {path}")


def _gpu_settings(image: str | None, node_selector: tuple[str, ...],
                  tolerations: tuple[str, ...], shm_size: str):
    from ctloop.pipelines.ct_pipeline import GpuSettings

    defaults = GpuSettings()
    taints = []
    for value in tolerations:
        key, sep, effect = value.rpartition(":")
        if not sep or not key or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise click.BadParameter(
                f"{value!r} is not KEY:EFFECT with EFFECT NoSchedule, PreferNoSchedule or "
                "NoExecute (e.g. nvidia.com/gpu:NoSchedule)", param_hint="--gpu-toleration")
        taints.append((key, effect))
    if not re.fullmatch(r"\d+(\.\d+)?(Ki|Mi|Gi|Ti|k|M|G|T)?", shm_size):
        raise click.BadParameter(f"{shm_size!r} is not a Kubernetes quantity (e.g. 2Gi)",
                                 param_hint="--shm-size")
    return GpuSettings(
        image=image or defaults.image,
        node_selector=tuple(_pairs(node_selector, "--gpu-node-selector",
                                    "nvidia.com/gpu.present=true").items())
        or defaults.node_selector,
        tolerations=tuple(taints) or defaults.tolerations,
        shm_size=shm_size)


@main.command(cls=_GroupedCommand)
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), is_eager=True,
              expose_value=False, callback=_read_config,
              help="A settings file (YAML) whose keys are the pipeline's parameters (data_uri, "
              "label, epochs, min_auc, ...); flags override it. `ctloop config init` writes one.")
@click.option("--local", "local_", is_flag=True, hidden=True,
              help="Kept for compatibility: runs are local (kfp.local) anyway.")
@click.option("--data", "data_uri", required=True,
              help="A CSV/Parquet file, a folder of them, a folder of span-<N>/ folders, or a "
              "pattern with {SPAN}/{VERSION} placeholders and * globs (data/span-{SPAN}/*.csv).")
@click.option("--spans", type=click.IntRange(min=1), default=1, show_default=True,
              help="Read the latest N spans and concatenate them (a rolling range).")
@click.option("--s3-endpoint-url",
              help="S3-compatible endpoint for s3:// data (MinIO, SeaweedFS) [default: boto3's]; "
              "credentials come from boto3's standard chain (AWS_* variables, config files).")
@click.option("--label", required=True, help="The label column.")
@click.option("--task", default="binary", show_default=True,
              type=click.Choice(["binary", "multiclass", "regression"]),
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
@click.option("--model-name", default="ctloop-model", show_default=True)
@click.option("--schema", "schema_uri", help="A curated TFDV schema (text proto).")
@click.option("--epochs", default=10, show_default=True)
@click.option("--batch-size", default=256, show_default=True, help="Training rows per step.")
@click.option("--learning-rate", default=0.001, show_default=True,
              help="Adam's learning rate, in (0, 1).")
@click.option("--hidden-units", multiple=True, type=int, metavar="N",
              help="The size of a hidden layer, in order (repeatable, e.g. --hidden-units 128 "
              "--hidden-units 64) [default: 64, 32].")
@click.option("--seed", default=42, show_default=True,
              help="Seed of every random choice in training, for reproducible runs.")
@click.option("--early-stopping-patience", default=0, show_default=True,
              help="Stop training after this many epochs without a better eval loss (0: off).")
@click.option("--user-module",
              help="A Python file defining build_model(features, train, hp, task) -> a compiled "
              "Keras model, which replaces the default model (local, gs:// or s3://).")
@click.option("--warm-start", is_flag=True,
              help="Start training from the serving version's weights when they fit (same task, "
              "classes, features, vocabularies and layers).")
@click.option("--slice-feature", "slice_features", multiple=True,
              help="An eval column to report metrics per value of (repeatable).")
@click.option("--drift-threshold", default=0.03, show_default=True,
              help="Smallest Jensen-Shannon divergence of a feature from the previous span (on "
              "its bins) that is drift, once significant.")
@click.option("--skew-threshold", default=0.03, show_default=True,
              help="Smallest Jensen-Shannon divergence between train and eval that is skew, once "
              "significant.")
@click.option("--false-alarm-rate", default=0.01, show_default=True,
              help="The chance that unchanged data reports any drift or skew, over all features.")
@click.option("--anomaly-policy", "anomaly_policy", multiple=True, metavar="TYPE=block|warn",
              help="Downgrade an anomaly type to a warning, e.g. CTLOOP_DRIFT=warn or "
              "SCHEMA_NEW_COLUMN=warn (repeatable; unlisted types block).")
@click.option("--stats-sample-rate", default=1.0, show_default=True,
              help="Share of rows TFDV statistics are computed on, in (0, 1].")
@click.option("--serving-python", envvar=SERVING_PYTHON_ENV,
              help="The python of the serving environment: infra validation runs the candidate "
              "in its KServe model server [default: $CTLOOP_SERVING_PYTHON, else the project's "
              ".venv/serving/bin/python that `make setup` builds].")
@click.option("--max-p99-ms", default=250.0, show_default=True,
              help="Infra SLO: p99 latency of single-row requests under 4 concurrent clients.")
@click.option("--min-rps", default=20.0, show_default=True,
              help="Infra SLO: requests per second under 4 concurrent clients.")
@click.option("--serving-url",
              help="A running `ctloop serve --registry` on this workdir's registry: the new "
              "version is a canary there first, promoted or rolled back automatically.")
@click.option("--canary-percent", default=20, show_default=True,
              help="The canary's share of the running server's requests.")
@click.option("--min-auc", type=float,
              help="Binary: value threshold on eval AUC [default: none: the model must beat a "
              "constant predictor (AUC 0.5) by a margin that holds statistically].")
@click.option("--max-auc-decrease", default=0.01, show_default=True,
              help="Binary: change threshold, the largest AUC drop allowed vs the serving model.")
@click.option("--min-accuracy", type=float,
              help="Multiclass: value threshold on eval accuracy [default: none: the model "
              "must beat always predicting the majority class].")
@click.option("--max-accuracy-decrease", default=0.01, show_default=True,
              help="Multiclass: change threshold, the largest accuracy drop allowed vs the "
              "serving model.")
@click.option("--max-mae", type=float,
              help="Regression: value threshold, the largest eval mean absolute error, in the "
              "label's units [default: none: the model must beat always predicting the "
              "labels' median].")
@click.option("--max-mae-increase", type=float,
              help="Regression: change threshold, the largest MAE rise allowed vs the serving "
              "model, in the label's units [default: 1% of the serving model's MAE].")
@click.option("--cold-start", default="bless_on_thresholds", show_default=True,
              type=click.Choice(["bless_on_thresholds", "require_baseline"]),
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
        max_mae_increase, cold_start, force_bless_reason) -> None:
    """Run one continuous-training iteration on this machine (kfp.local).

    Settings come from flags, from a settings file (-c ctloop.yaml) under them, and from the
    pipeline's defaults under both.
    """
    from ctloop import drift, local_run, preflight
    from ctloop.components.evaluate.logic import NO_THRESHOLD
    from ctloop.components.train.logic import Hyperparameters
    from ctloop.components.validate_data import logic
    from ctloop.registry import open_registry, validate_model_name

    validate_model_name(model_name)
    serving_python = find_serving_python(ctx, serving_python)
    anomaly_policy = logic.check_policy(
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
        from ctloop.components.train.logic import load_user_module

        if "://" not in user_module:
            user_module = str(Path(user_module).resolve())
        load_user_module(user_module, s3_endpoint_url)  # imports, and defines build_model
    unknown = sorted(set(slice_features) - set(columns))
    if unknown:
        raise click.UsageError(f"--slice-feature {unknown} not among the data's columns "
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
        "stats_sample_rate": stats_sample_rate, "serving_python": serving_python,
        "max_p99_ms": max_p99_ms, "min_rps": min_rps, "serving_url": serving_url or "",
        "canary_percent": canary_percent, "cold_start": cold_start,
        "early_stopping_patience": early_stopping_patience, "slice_features": list(slice_features),
        "user_module": user_module or "",
        "force_bless_reason": force_bless_reason or "",
    }
    if hidden_units:
        params["hidden_units"] = list(hidden_units)
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
    if verbose:
        log_path = "-"
    if log_path is None:
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        log_path = str(Path(workdir) / "logs" / f"run-{stamp}.log")
    with contextlib.ExitStack() as stack:
        progress = None
        if log_path != "-":  # else the tasks' own logs say what runs
            from ctloop.progress import TaskProgress

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
    if summary_path:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(json.dumps(summary, indent=2))
    click.echo(local_run.describe(summary))
    if log_path != "-":
        click.echo(f"task logs: {log_path}")


def _terminal(stack: contextlib.ExitStack):
    """This process's standard output as it is now, for the progress view: a copy of its file
    descriptor, which keeps pointing at the terminal while the tasks' output goes to the log;
    the stream itself when it has no descriptor (a test's capture)."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout
    sys.stdout.flush()
    return stack.enter_context(open(os.dup(fd), "w", buffering=1,
                                    encoding=sys.stdout.encoding or "utf-8", errors="replace"))


@main.group("config")
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

    from ctloop import config, preflight

    if Path(output).exists() and not force:
        raise click.UsageError(f"{output} exists; pass --force to overwrite it, or -o another "
                               "file")
    first, frame = preflight.read_first(data_uri, s3_endpoint_url)
    proposal = config.propose(frame, label)
    if model_name is None:
        model_name = re.sub(r"[^a-z0-9]+", "-", proposal.label.lower()).strip("-")[:50] or "ctloop"
        model_name += "-model"
    text = config.starter(data_uri, proposal, model_name)
    config.check(yaml.safe_load(text), output)  # what it writes, run accepts
    Path(output).write_text(text)
    guessed = "guessed" if label is None else "given"
    click.echo(f"wrote {output} from {first}:")
    click.echo(f"  label {proposal.label} ({guessed}), task {proposal.task} (label values: "
               f"{', '.join(proposal.label_values)})")
    for column, why in proposal.exclude.items():
        click.echo(f"  exclude {column}: {why}")
    click.echo(f"check it, then: ctloop run -c {output}")


@main.command("runs")
@click.argument("workdir", default="work", type=click.Path(file_okay=False))
def runs_(workdir: str) -> None:
    """List the runs of a workdir (default: work): span, decisions, pushed version, outcome."""
    import shutil

    from ctloop import runs

    rows = runs.list_runs(workdir)
    if not rows:
        click.echo(f"no runs in {Path(workdir) / 'pipeline_root'}")
        return
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else None
    click.echo(runs.table(rows, width))
    click.echo(f"{len(rows)} run(s); their outputs and reports: "
               f"{Path(workdir) / 'pipeline_root'}/<pipeline>-<time>/")


@main.command()
@click.argument("run_or_workdir", default="work", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the page [default: report.html in the run's folder].")
def report(run_or_workdir: str, output: str | None) -> None:
    """Write one self-contained HTML page for a run (a run's folder, or a workdir's latest run):
    decisions and reasons, data and anomalies, drift per feature, candidate vs baseline, ROC and
    confusion matrix, infra latency, links to the TFDV and evaluation views."""
    from ctloop import report as pages

    run_dir = pages.find_run(run_or_workdir)
    click.echo(f"wrote {pages.write(run_dir, Path(output) if output else None)}")


@main.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="A settings file: its registry_uri, model_name and s3_endpoint_url.")
@click.option("--registry", "registry_uri",
              help="A registry: a folder or s3://BUCKET/PREFIX [default: the config's "
              "registry_uri, else WORKDIR/registry].")
@click.option("--workdir", default="work", show_default=True, type=click.Path(file_okay=False))
@click.option("--model-name", help="[default: the config's model_name, else the registry's only "
              "model].")
@click.option("--s3-endpoint-url", help="S3-compatible endpoint for an s3:// registry.")
def versions(config_path, registry_uri, workdir, model_name, s3_endpoint_url) -> None:
    """List a registry's model versions: metrics, infra latency, which one serves."""
    from ctloop import config, runs
    from ctloop.registry import open_registry

    settings = config.load(config_path) if config_path else {}
    registry_uri = registry_uri or settings.get("registry_uri") or str(Path(workdir) / "registry")
    s3_endpoint_url = s3_endpoint_url or settings.get("s3_endpoint_url") or None
    model_name = model_name or settings.get("model_name")
    if model_name is None:
        models = sorted(p.name for p in Path(registry_uri).iterdir() if p.is_dir()) if (
            "://" not in registry_uri and Path(registry_uri).is_dir()) else []
        if len(models) != 1:
            raise click.UsageError(f"pass --model-name: registry {registry_uri} holds "
                                   f"{', '.join(models) or 'no model folders'}")
        model_name = models[0]
    rows = runs.version_rows(open_registry(registry_uri, model_name, s3_endpoint_url))
    if not rows:
        click.echo(f"no versions of {model_name} in {registry_uri}")
        return
    click.echo(runs.table(rows))


@main.command()
@click.option("--registry", "registry_uri", type=click.Path(file_okay=False),
              help="Registry root: serve the model's serving version and follow it (a new "
              "version or a canary is picked up without a restart), or serve --version.")
@click.option("--model-dir", type=click.Path(file_okay=False),
              help="Serve this model folder instead of a registry version.")
@click.option("--model-name", default="ctloop-model", show_default=True,
              help="The model's name, in the registry and in request paths.")
@click.option("--version", type=click.IntRange(min=1), help="Registry version [default: serving].")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="HTTP port (V1, V2, health, /metrics).")
@click.option("--grpc-port", type=click.IntRange(1, 65535),
              help="Also serve V2 over gRPC on this port [default: off].")
@click.option("--max-batch", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Most rows per request; more is a 400.")
@click.option("--request-log", is_flag=True,
              help="Log a line per request (access and latency); /metrics counts them anyway.")
@click.option("--record-dir", type=click.Path(file_okay=False),
              help="Record sampled requests here (inputs, answers, version, latency, request "
              "id) as JSON Lines, off the request path, for `ctloop monitor` [default: off].")
@click.option("--record-sample-rate", type=float, default=1.0, show_default=True,
              help="The share of requests recorded, in (0, 1].")
@click.option("--record-rotate-rows", type=click.IntRange(min=1), default=100_000,
              show_default=True, help="Start a new record file after this many rows...")
@click.option("--record-rotate-minutes", type=float, default=10.0, show_default=True,
              help="...or after this many minutes.")
def serve(registry_uri, model_dir, model_name, version, port, grpc_port, max_batch,
          request_log, record_dir, record_sample_rate, record_rotate_rows,
          record_rotate_minutes) -> None:
    """Serve a model with the KServe model server (serving environment)."""
    if (registry_uri is None) == (model_dir is None):
        raise click.UsageError("pass exactly one of --registry or --model-dir")
    if version is not None and registry_uri is None:
        raise click.UsageError("--version selects a registry version: pass --registry too")
    from ctloop.serving import server
    from ctloop.serving.recorder import Recorder

    recorder = None
    if record_dir:
        recorder = Recorder(record_dir, record_sample_rate, rotate_rows=record_rotate_rows,
                            rotate_s=record_rotate_minutes * 60)
    if registry_uri and version is None:
        # Follows the registry: a new serving version or a canary is picked up while serving.
        model = server.RegistryModel(model_name, registry_uri, max_batch)
    else:
        path = Path(model_dir) if model_dir else server.resolve_model_dir(
            registry_uri, model_name, version)
        model = server.CtloopModel(model_name, path, max_batch, version=version and str(version))
    server.run_server(model, http_port=port, grpc_port=grpc_port, request_log=request_log,
                      recorder=recorder)


@main.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True,
              help="The model server's base URL.")
@click.option("--model-name", default="ctloop-model", show_default=True)
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A CSV/Parquet file of rows to send.")
@click.option("--rows", default=5, show_default=True, help="How many rows to send.")
@click.option("--drop", multiple=True, help="A column not to send, e.g. the label (repeatable).")
@click.option("--requests", "repeat", default=50, show_default=True,
              help="Single-row requests to time for the latency figures.")
def predict(url, model_name, data_path, rows, drop, repeat) -> None:
    """Send rows to a running model server; print predictions and latency."""
    from ctloop import client

    result = client.predict_file(url, model_name, Path(data_path), rows, list(drop), repeat)
    click.echo(client.describe(result))


def _pairs(values: tuple[str, ...], flag: str, example: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise click.UsageError(f"{flag} {value!r} is not KEY=VALUE, e.g. {example}")
        pairs[key] = item
    return pairs


# Operating the pipeline on a KFP cluster: ctloop/cli_kfp.py.
from ctloop.cli_kfp import schedule, submit, upload  # noqa: E402 - registered on main, defined above

for _command in (upload, submit, schedule):
    main.add_command(_command)


# Monitoring the served model (ctloop/monitor.py): what it receives, against its training data.
@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--records", "records_dir", required=True, type=click.Path(file_okay=False),
              help="The record directory of `ctloop serve --record-dir`.")
@click.option("--registry", "registry_root", required=True, type=click.Path(file_okay=False),
              help="The registry the server serves from (its serving version is monitored).")
@click.option("--model-name", default="ctloop-model", show_default=True)
@click.option("--window", default="2000", show_default=True,
              help="The served rows compared: the latest N rows (2000), or a duration ending at "
              "the latest record (30m, 6h, 1d); the previous window is as long, before it.")
@click.option("--min-rows", type=click.IntRange(min=1), default=200, show_default=True,
              help="The fewest rows of a window judged; fewer give no decision.")
@click.option("--drift-threshold", default=0.03, show_default=True,
              help="Smallest Jensen-Shannon divergence from the previous window that is drift, "
              "once significant (as data validation's).")
@click.option("--skew-threshold", default=0.03, show_default=True,
              help="Smallest Jensen-Shannon divergence from the training data that is skew, "
              "once significant.")
@click.option("--false-alarm-rate", default=0.01, show_default=True,
              help="The chance that unchanged traffic reports any drift or skew, over all "
              "features.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write report.md, decision.json and metrics.prom here [default: "
              "RECORDS/monitor].")
@click.option("--prom-file", type=click.Path(dir_okay=False),
              help="Also write the metrics here (node_exporter's textfile collector directory, "
              "a *.prom name).")
@click.option("--trigger", "trigger_command", type=click.Choice(["none", "run", "submit"]),
              default="none", show_default=True,
              help="On drift, start a CT run: `ctloop run` (local) or `ctloop submit` (a KFP "
              "cluster) with the arguments after `--`; one per drift episode.")
@click.option("--cooldown-minutes", default=60.0, show_default=True,
              help="No run starts within this many minutes of the last triggered one.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False),
              help="The trigger's state file (drift episode, last run) [default: "
              "RECORDS/monitor/trigger-state.json].")
@click.argument("command_args", nargs=-1, type=click.UNPROCESSED)
def monitor(records_dir, registry_root, model_name, window, min_rows, drift_threshold,
            skew_threshold, false_alarm_rate, out_dir, prom_file, trigger_command,
            cooldown_minutes, state_path, command_args) -> None:
    """Compare served traffic with the serving model's training data; retrain on drift.

    Arguments after `--` are the flags of the triggered `ctloop run` or `ctloop submit`.
    """
    from ctloop import drift
    from ctloop import monitor as monitoring

    if command_args and trigger_command == "none":
        raise click.UsageError(f"arguments {list(command_args)} given but --trigger is none; "
                               "pass --trigger run or --trigger submit, or drop them")
    thresholds = drift.Thresholds(drift_threshold, skew_threshold, false_alarm_rate)
    command = (monitoring.ctloop_command(trigger_command, list(command_args))
               if trigger_command != "none" else None)
    result = monitoring.monitor(records_dir, registry_root, model_name,
                                monitoring.Window.parse(window), thresholds, min_rows)
    out = Path(out_dir) if out_dir else Path(records_dir) / "monitor"
    decision = result.decision()
    if command is not None:
        # One state per record directory, whatever --out: episodes are the traffic's.
        state = state_path or Path(records_dir) / "monitor" / "trigger-state.json"
        fired = monitoring.trigger(result, state, command, cooldown_minutes * 60)
        decision["trigger"] = fired.as_dict()
    monitoring.write_atomic(out / "report.md", monitoring.markdown(result))
    monitoring.write_atomic(out / "decision.json", json.dumps(decision, indent=2))
    metrics = monitoring.prometheus(result)
    monitoring.write_atomic(out / "metrics.prom", metrics)
    if prom_file:
        monitoring.write_atomic(prom_file, metrics)
    click.echo(f"version {result.version} (span {result.span}), {result.rows} rows: "
               + ("drift in " + ", ".join(result.features) if result.drifted
                  else "no drift" if result.enough else "no decision (too few rows)"))
    if "trigger" in decision:
        click.echo(f"trigger: {decision['trigger']['reason']}"
                   + (f" (exit code {decision['trigger']['exit_code']})"
                      if decision["trigger"]["started"] else ""))
    click.echo(f"report: {out / 'report.md'}")


@main.command()
@click.option("--records", "records_dir", required=True, type=click.Path(file_okay=False),
              help="The record directory of `ctloop serve --record-dir`.")
@click.option("--labels", "labels_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A CSV/Parquet/JSON Lines file: request_id (the id a recorded answer "
              "carries), label, and optionally row (the row of the request, default 0).")
def feedback(records_dir, labels_path) -> None:
    """Add labels that came back for served requests; `ctloop monitor` joins them by id."""
    import pandas as pd

    from ctloop import monitor as monitoring

    suffix = Path(labels_path).suffix
    reader = {".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True)}
    labels = reader.get(suffix, lambda p: pd.read_csv(p, dtype={"request_id": str}))(labels_path)
    path = monitoring.write_labels(records_dir, labels)
    click.echo(f"{len(labels)} labels -> {path}")


if __name__ == "__main__":
    sys.exit(main())
