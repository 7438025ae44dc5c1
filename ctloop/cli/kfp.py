"""``ctloop upload``, ``submit`` and ``schedule``: operating the CT pipeline on a KFP cluster.

The API host comes from ``--host`` or ``KFP_HOST``, a bearer token only from ``KFP_TOKEN`` (a
flag would leave it in shell histories and process lists); neither the token nor anything derived
from it is printed or logged. The ``kfp.Client`` is built once per invocation, after every check
of the command's input that needs no API, and kept in ``ctx.obj``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from ctloop.errors import ConfigError
from ctloop.kfp import api as kfp_api
from ctloop.kfp import compiling, schedules
from ctloop.kfp import plan as kfp_plan

TOKEN_ENV = "KFP_TOKEN"
DEFAULT_EXPERIMENT = schedules.DEFAULT_EXPERIMENT

host_option = click.option(
    "--host", envvar="KFP_HOST", required=True, metavar="URL",
    help="The KFP API (and UI) base URL, e.g. http://localhost:8080 [env: KFP_HOST]; a bearer "
    f"token, if the API needs one, comes from {TOKEN_ENV}.")
pipeline_option = click.option(
    "--pipeline-name", default=None,
    help="The pipeline's name on KFP [default: the name compiled into the IR].")
experiment_option = click.option(
    "--experiment", default=DEFAULT_EXPERIMENT, show_default=True,
    help="The KFP experiment the runs belong to.")


def client_for(ctx: click.Context, host: str) -> Any:
    """The invocation's ``kfp.Client``: built on first use, then taken from ``ctx.obj``."""
    obj = ctx.find_root().ensure_object(dict)
    if "kfp_client" not in obj:
        obj["kfp_client"] = kfp_api.connect(host, os.environ.get(TOKEN_ENV))
    return obj["kfp_client"]


@click.command()
@host_option
@click.option("--package", type=click.Path(exists=True, dir_okay=False),
              default=str(compiling.PIPELINE_YAML), show_default=True,
              help="The compiled pipeline (IR YAML) to upload.")
@pipeline_option
@click.option("--version-name",
              help="Name of the new version [default: the git commit, with -dirty when the tree "
              "has changes; spec-<hash> outside git].")
@click.option("--description", default="", help="Stored with the pipeline or version.")
@click.option("--dry-run", is_flag=True, help="Say what would be uploaded; upload nothing.")
@click.pass_context
def upload(ctx, host, package, pipeline_name, version_name, description, dry_run) -> None:
    """Upload the pipeline: a new pipeline, else a new version, unless that spec is there."""
    text = Path(package).read_text()
    compiled_name = _compiled_name(text, package)  # also checks that it is an IR at all
    name = pipeline_name or compiled_name
    digest = kfp_plan.spec_hash(text)
    git = kfp_api.git_state(Path(package).resolve().parent)
    new_version = version_name or kfp_plan.default_version_name(git.commit, git.dirty, digest)
    client = client_for(ctx, host)
    with kfp_api.calling(host, f"listing pipeline {name!r}"):
        pipeline = kfp_api.find_pipeline(client, name)
        versions = kfp_api.list_versions(client, pipeline.pipeline_id) if pipeline else []
    action = kfp_plan.plan_upload(name, pipeline, versions, digest, new_version,
                                  version_name is not None, description)
    if dry_run:
        click.echo(f"would {_describe_upload(action)}")
        return
    with kfp_api.calling(host, f"uploading to pipeline {name!r}"):
        pipeline_id, version_id, shown_name = kfp_api.upload(client, action, Path(package))
    verb = "unchanged: spec already" if isinstance(action, kfp_plan.KeepVersion) else "uploaded"
    click.echo(f"{verb} {name} version {shown_name} (spec {digest[:12]})")
    click.echo(_link(host, f"pipelines/details/{pipeline_id}/version/{version_id}"))


@click.command()
@host_option
@pipeline_option
@click.option("--version-name", default=kfp_plan.LATEST, show_default=True,
              help="The pipeline version to run, or latest (the newest).")
@experiment_option
@click.option("--run-name", help="The run's name [default: <version>-<UTC time>].")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="A settings file, as `ctloop run -c` reads it: its keys are the pipeline's "
              "parameters; --param overrides them.")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A pipeline parameter (repeatable); lists and dicts as JSON.")
@click.option("--beam-arg", "beam_args", multiple=True, metavar="ARG",
              help="A Beam pipeline option for the TFDV and TFMA steps (repeatable), e.g. "
              "--beam-arg=--runner=DataflowRunner; sets beam_pipeline_args over the settings "
              "file's.")
@click.option("--wait", is_flag=True, help="Wait until the run finishes; fail unless it succeeds.")
@click.option("--timeout", type=click.IntRange(min=1), default=3600, show_default=True,
              help="Seconds --wait waits.")
@click.pass_context
def submit(ctx, host, pipeline_name, version_name, experiment, run_name, config_path, params,
           beam_args, wait, timeout) -> None:
    """Run a version of the pipeline once, with parameters."""
    from ctloop import config

    values = {**(config.load(config_path) if config_path else {}), **_params(params)}
    if beam_args:
        if "beam_pipeline_args" in _params(params):
            raise click.UsageError("--beam-arg and --param beam_pipeline_args=... both set the "
                                   "Beam options; use one of them")
        values["beam_pipeline_args"] = list(beam_args)
    name = pipeline_name or _default_pipeline_name()
    client = client_for(ctx, host)
    with kfp_api.calling(host, f"starting a run of {name!r}"):
        run, version = kfp_api.start_run(client, name, version_name, experiment, values,
                                         run_name)
    click.echo(f"run {run.run_id} of {name} version {version.display_name}: "
               f"{_link(host, f'runs/details/{run.run_id}')}")
    if not wait:
        return
    with kfp_api.calling(host, f"waiting for run {run.run_id}"):
        final = kfp_api.wait_for_run(client, run.run_id, timeout)
    if final.state not in kfp_api.FINISHED:
        raise click.ClickException(
            f"run {run.run_id} is still {final.state} after {timeout} s; it goes on: "
            f"{_link(host, f'runs/details/{run.run_id}')} (raise --timeout to wait longer)")
    if final.state != "SUCCEEDED":
        raise click.ClickException(
            f"run {run.run_id} ended {final.state}; its tasks' logs say why: "
            f"{_link(host, f'runs/details/{run.run_id}')}")
    click.echo(f"run {run.run_id} SUCCEEDED")


@click.group()
def schedule() -> None:
    """Recurring runs as code: apply a schedules file, list, pause, resume, delete."""


@schedule.command("apply")
@host_option
@click.option("--file", "path", type=click.Path(dir_okay=False), default="schedules.yaml",
              show_default=True, help="The schedules file.")
@click.option("--prune", is_flag=True,
              help="Also delete recurring runs ctloop created that the file no longer declares.")
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing.")
@click.pass_context
def schedule_apply(ctx, host, path, prune, dry_run) -> None:
    """Make the experiment's recurring runs match the file (idempotent)."""
    declared = schedules.load(Path(path), _default_pipeline_name())
    client = client_for(ctx, host)
    found: dict[str, tuple[Any, list[Any]]] = {}  # each schedule's pipeline, read once
    with kfp_api.calling(host, f"reading pipeline {declared.pipeline!r}"):
        targets = {}
        for item in declared.schedules:
            if item.pipeline not in found:
                found[item.pipeline] = _pipeline_and_versions(client, item.pipeline)
            pipeline, versions = found[item.pipeline]
            version = kfp_plan.resolve_version(item.pipeline, versions, item.pipeline_version)
            definitions = kfp_plan.pipeline_parameters(kfp_api.version_spec(client, version))
            arguments = kfp_plan.coerce_parameters(definitions, item.parameters,
                                                   f"{path}: schedule {item.name!r}")
            targets[item.name] = schedules.Target(pipeline.pipeline_id,
                                                  version.pipeline_version_id, arguments)
    with kfp_api.calling(host, f"reading experiment {declared.experiment!r}"):
        experiment = kfp_api.find_experiment(client, declared.experiment)
        if experiment is None and not dry_run:
            experiment = client.create_experiment(declared.experiment)
        existing = kfp_api.list_recurring_runs(client, experiment.experiment_id) if (
            experiment) else []
    actions = schedules.plan(declared.schedules, targets, existing, prune)
    versions = [v for _, listed in found.values() for v in listed]
    for action in actions:
        click.echo(("would " if dry_run else "") + _describe_schedule(action, versions))
    if not dry_run:
        with kfp_api.calling(host, "applying schedules"):
            kfp_api.apply_schedules(client, experiment.experiment_id, actions)
    changed = sum(not isinstance(a, schedules.Unchanged) for a in actions)
    click.echo(f"{len(declared.schedules)} schedule(s) declared, {changed} change(s)"
               + (" planned" if dry_run else " applied"))


@schedule.command("list")
@host_option
@experiment_option
@click.pass_context
def schedule_list(ctx, host, experiment) -> None:
    """List the experiment's recurring runs."""
    client = client_for(ctx, host)
    with kfp_api.calling(host, f"listing recurring runs of {experiment!r}"):
        found = kfp_api.find_experiment(client, experiment)
        runs = kfp_api.list_recurring_runs(client, found.experiment_id) if found else []
    if not runs:
        click.echo(f"no recurring runs in experiment {experiment!r}")
    for run in sorted(runs, key=lambda r: (r.display_name or "", r.recurring_run_id)):
        managed = "ctloop" if schedules.tagged_fingerprint(run.description) else "not ctloop"
        version = run.pipeline_version_reference.pipeline_version_id if (
            run.pipeline_version_reference) else run.pipeline_version_id
        click.echo(f"{run.display_name}\t{run.status}\t{schedules.describe_trigger(run)}\t"
                   f"version {version}\t{managed}\t{run.recurring_run_id}")


# verb -> (the kfp.Client method, what was done, help)
_SWITCHES = {
    "pause": ("disable_recurring_run", "paused",
              "Disable a recurring run (the next apply restores the file's state)."),
    "resume": ("enable_recurring_run", "resumed", "Enable a paused recurring run."),
    "delete": ("delete_recurring_run", "deleted",
               "Delete a recurring run (the next apply creates it again if the file declares it)."),
}


def _switch_command(verb: str) -> click.Command:
    method, done, help_text = _SWITCHES[verb]

    @schedule.command(verb, help=help_text)
    @click.argument("name")
    @host_option
    @experiment_option
    @click.pass_context
    def command(ctx, name, host, experiment) -> None:
        client = client_for(ctx, host)
        with kfp_api.calling(host, f"{verb} of recurring run {name!r}"):
            found = kfp_api.find_experiment(client, experiment)
            runs = kfp_api.list_recurring_runs(client, found.experiment_id) if found else []
            matches = [r for r in runs if r.display_name == name]
            if len(matches) != 1:
                raise ConfigError(
                    f"schedule {name!r}: {len(matches)} recurring runs of that name in "
                    f"experiment {experiment!r}, not 1; see `ctloop schedule list`")
            getattr(client, method)(matches[0].recurring_run_id)
        click.echo(f"{done} {name} ({matches[0].recurring_run_id})")

    return command


for _verb in _SWITCHES:
    _switch_command(_verb)


def _pipeline_and_versions(client: Any, name: str) -> tuple[Any, list[Any]]:
    pipeline = kfp_api.find_pipeline(client, name)
    if pipeline is None:
        raise ConfigError(f"pipeline {name!r} does not exist on this KFP; run `ctloop upload` "
                          "first, or pass the right --pipeline-name / pipeline:")
    return pipeline, kfp_api.list_versions(client, pipeline.pipeline_id)


def _default_pipeline_name() -> str:
    from ctloop.pipelines.ct_pipeline import PIPELINE_NAME

    return PIPELINE_NAME


def _compiled_name(text: str, package: Any) -> str:
    import yaml

    try:
        # The pipeline spec is the first document (a platform spec may follow).
        return next(yaml.safe_load_all(text))["pipelineInfo"]["name"]
    except (yaml.YAMLError, TypeError, KeyError, StopIteration) as exc:
        raise ConfigError(f"{package} is not a compiled KFP pipeline (no pipelineInfo.name); "
                          "compile it with `ctloop compile`") from exc


def _params(values: tuple[str, ...]) -> dict[str, str]:
    params = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--param {value!r} is not NAME=VALUE, e.g. epochs=5")
        params[key] = item
    return params


def _link(host: str, fragment: str) -> str:
    return f"{host.rstrip('/')}/#/{fragment}"


def _describe_upload(action: kfp_plan.UploadAction) -> str:
    if isinstance(action, kfp_plan.CreatePipeline):
        return f"create pipeline {action.name}"
    if isinstance(action, kfp_plan.CreateVersion):
        return f"create version {action.version_name} of pipeline {action.pipeline_id}"
    return f"keep version {action.version_name}: same spec"


def _describe_schedule(action: schedules.Action, versions: list[Any]) -> str:
    if isinstance(action, schedules.Create):
        item = action.schedule
        trigger = f"cron {schedules.cron_from_kfp(item.cron)}" if item.cron else (
            f"every {item.interval_second} s")
        names = {v.pipeline_version_id: v.display_name for v in versions}
        state = "" if item.enabled else ", disabled"
        return (f"create {item.name} ({trigger}, version "
                f"{names.get(action.version_id, action.version_id)}{state})")
    if isinstance(action, schedules.Delete):
        return f"delete {action.name} ({action.reason}, {action.recurring_run_id})"
    if isinstance(action, schedules.SetEnabled):
        return f"{'resume' if action.enabled else 'pause'} {action.name}"
    return f"unchanged {action.name}"
