"""``ctloop runs``, ``ctloop report`` and ``ctloop versions``: what a workdir and a registry
hold."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("runs")
@click.argument("workdir", default="work", type=click.Path(file_okay=False))
def runs_(workdir: str) -> None:
    """List the runs of a workdir (default: work): span, decisions, pushed version, outcome."""
    import shutil

    from ctloop.local import runs

    rows = runs.list_runs(workdir)
    if not rows:
        click.echo(f"no runs in {Path(workdir) / 'pipeline_root'}")
        return
    width = shutil.get_terminal_size((120, 24)).columns if sys.stdout.isatty() else None
    click.echo(runs.table(rows, width))
    click.echo(f"{len(rows)} run(s); their outputs and reports: "
               f"{Path(workdir) / 'pipeline_root'}/<pipeline>-<time>/")


@click.command()
@click.argument("run_or_workdir", default="work", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="Where to write the page [default: report.html in the run's folder].")
def report(run_or_workdir: str, output: str | None) -> None:
    """Write one self-contained HTML page for a run (a run's folder, or a workdir's latest run):
    decisions and reasons, data and anomalies, drift per feature, candidate vs baseline, ROC and
    confusion matrix, infra latency, links to the TFDV and evaluation views."""
    from ctloop.local import report as pages

    run_dir = pages.find_run(run_or_workdir)
    click.echo(f"wrote {pages.write(run_dir, Path(output) if output else None)}")


@click.command()
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
    """List a registry's model versions: metrics, infra latency, the stage(s) each is in, and
    the decisions that moved them (who, when, why)."""
    from ctloop import config
    from ctloop.local import runs
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
    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    rows = runs.version_rows(registry)
    if not rows:
        click.echo(f"no versions of {model_name} in {registry_uri}")
        return
    states = _stage_states(registry)
    for row in rows:
        row["state"] = states.get(int(row["version"][1:]), row["state"])
    click.echo(runs.table(rows))
    decided = [(version.number, d) for version in registry.versions()
               for d in version.record().get("decisions") or [] if isinstance(d, dict)]
    if decided:
        click.echo("\ndecisions:")
    for number, decision in decided:
        click.echo(f"  v{number}  {_decision_line(decision)}")


def _stage_states(registry) -> dict[int, str]:
    """Version -> where it is in the stages ("serving" for production, as before stages;
    "staging", "staging-canary 10%", "shadow", ...), for versions in any."""
    from ctloop.registry import PRODUCTION, STAGING, stages

    states: dict[int, list[str]] = {}
    described = stages.describe(registry)
    for stage, now in ((s, described[s]) for s in (PRODUCTION, STAGING)):  # production first
        prefix = "" if stage == PRODUCTION else f"{stage}-"
        if now["version"] is not None:
            states.setdefault(now["version"], []).append(
                "serving" if stage == PRODUCTION else stage)
        if now["canary"]:
            states.setdefault(now["canary"]["version"], []).append(
                f"{prefix}canary {now['canary']['percent']}%")
        if now["shadow"] is not None:
            states.setdefault(now["shadow"], []).append(f"{prefix}shadow")
    return {number: ",".join(names) for number, names in states.items()}


def _decision_line(decision: dict) -> str:
    """One decision: when, what, who, why."""
    import datetime

    when = (datetime.datetime.fromtimestamp(decision["at_unix"]).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(decision.get("at_unix"), (int, float)) else "-")
    action = decision.get("action", "?")
    where = decision.get("stage")
    what = f"{action} to {where}" if action == "promote" else (
        f"{action} of {where} to v{decision.get('to_version')}" if action == "rollback"
        else f"{action} ({where})" if where else action)
    who = decision.get("approved_by") or decision.get("by")
    why = decision.get("reason")
    return "  ".join(filter(None, [when, what, f"by {who}" if who else None,
                                   f"because: {why}" if why else None]))
