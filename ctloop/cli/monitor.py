"""``ctloop monitor`` and ``ctloop feedback``: served traffic against the training data, and
the labels that come back."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ctloop.settings import (
    COOLDOWN_MINUTES,
    MODEL_NAME,
    MONITOR_MIN_ROWS,
    MONITOR_WINDOW,
    DriftThresholds,
)


# Monitoring the served model (ctloop/monitor.py): what it receives, against its training data.
@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--records", "records_dir", required=True,
              help="The record directory of `ctloop serve --record-dir`: a folder or "
              "s3://BUCKET/PREFIX.")
@click.option("--registry", "registry_root", required=True,
              help="The registry the server serves from (its serving version is monitored): "
              "a folder or s3://BUCKET/PREFIX.")
@click.option("--s3-endpoint-url", help="S3-compatible endpoint of s3:// records, registry, "
              "--out and --state (MinIO, SeaweedFS) [default: boto3's own configuration].")
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option("--window", default=MONITOR_WINDOW, show_default=True,
              help="The served rows compared: the latest N rows (2000), or a duration ending at "
              "the latest record (30m, 6h, 1d); the previous window is as long, before it.")
@click.option("--min-rows", type=click.IntRange(min=1), default=MONITOR_MIN_ROWS, show_default=True,
              help="The fewest rows of a window judged; fewer give no decision.")
@click.option("--drift-threshold", default=DriftThresholds.drift, show_default=True,
              help="Smallest Jensen-Shannon divergence from the previous window that is drift, "
              "once significant (as data validation's).")
@click.option("--skew-threshold", default=DriftThresholds.skew, show_default=True,
              help="Smallest Jensen-Shannon divergence from the training data that is skew, "
              "once significant.")
@click.option("--false-alarm-rate", default=DriftThresholds.false_alarm_rate,
              show_default=True,
              help="The chance that unchanged traffic reports any drift or skew, over all "
              "features.")
@click.option("--out", "out_dir",
              help="Write report.md, decision.json and metrics.prom here (a folder or s3://) "
              "[default: RECORDS/monitor].")
@click.option("--prom-file", type=click.Path(dir_okay=False),
              help="Also write the metrics here (node_exporter's textfile collector directory, "
              "a *.prom name).")
@click.option("--trigger", "trigger_command", type=click.Choice(["none", "run", "submit"]),
              default="none", show_default=True,
              help="On drift, start a CT run: `ctloop run` (local) or `ctloop submit` (a KFP "
              "cluster) with the arguments after `--`; one per drift episode.")
@click.option("--cooldown-minutes", default=COOLDOWN_MINUTES, show_default=True,
              help="No run starts within this many minutes of the last triggered one.")
@click.option("--state", "state_path",
              help="The trigger's state file or s3:// object (drift episode, last run) "
              "[default: RECORDS/monitor/trigger-state.json].")
@click.argument("command_args", nargs=-1, type=click.UNPROCESSED)
def monitor(records_dir, registry_root, s3_endpoint_url, model_name, window, min_rows,
            drift_threshold, skew_threshold, false_alarm_rate, out_dir, prom_file, trigger_command,
            cooldown_minutes, state_path, command_args) -> None:
    """Compare served traffic with the serving model's training data; retrain on drift.

    Arguments after `--` are the flags of the triggered `ctloop run` or `ctloop submit`.
    """
    from ctloop import drift
    from ctloop.monitor import measure, records, report, store, trigger

    if command_args and trigger_command == "none":
        raise click.UsageError(f"arguments {list(command_args)} given but --trigger is none; "
                               "pass --trigger run or --trigger submit, or drop them")
    thresholds = drift.Thresholds(drift_threshold, skew_threshold, false_alarm_rate)
    command = (trigger.ctloop_command(trigger_command, list(command_args))
               if trigger_command != "none" else None)
    result = measure.monitor(records_dir, registry_root, model_name,
                             records.Window.parse(window), thresholds, min_rows, s3_endpoint_url)
    out = out_dir or store.join(records_dir, "monitor")
    decision = result.decision()
    if command is not None:
        # One state per record directory, whatever --out: episodes are the traffic's.
        state = state_path or store.join(records_dir, "monitor", "trigger-state.json")
        fired = trigger.trigger(result, state, command, cooldown_minutes * 60,
                                s3_endpoint_url=s3_endpoint_url)
        decision["trigger"] = fired.as_dict()
    store.write_text(store.join(out, "report.md"), report.markdown(result), s3_endpoint_url)
    store.write_text(store.join(out, "decision.json"), json.dumps(decision, indent=2),
                     s3_endpoint_url)
    metrics = report.prometheus(result)
    store.write_text(store.join(out, "metrics.prom"), metrics, s3_endpoint_url)
    if prom_file:
        report.write_atomic(prom_file, metrics)
    click.echo(f"version {result.version} (span {result.span}), {result.rows} rows: "
               + ("drift in " + ", ".join(result.features) if result.drifted
                  else "no drift" if result.enough else "no decision (too few rows)"))
    if "trigger" in decision:
        click.echo(f"trigger: {decision['trigger']['reason']}"
                   + (f" (exit code {decision['trigger']['exit_code']})"
                      if decision["trigger"]["started"] else ""))
    click.echo(f"report: {store.join(out, 'report.md')}")


@click.command()
@click.option("--records", "records_dir", required=True,
              help="The record directory of `ctloop serve --record-dir`: a folder or "
              "s3://BUCKET/PREFIX.")
@click.option("--s3-endpoint-url", help="S3-compatible endpoint of s3:// --records.")
@click.option("--labels", "labels_path", required=True,
              type=click.Path(exists=True, dir_okay=False),
              help="A CSV/Parquet/JSON Lines file: request_id (the id a recorded answer "
              "carries), label, and optionally row (the row of the request, default 0).")
def feedback(records_dir, s3_endpoint_url, labels_path) -> None:
    """Add labels that came back for served requests; `ctloop monitor` joins them by id."""
    import pandas as pd

    from ctloop.monitor import records

    suffix = Path(labels_path).suffix
    reader = {".parquet": pd.read_parquet, ".jsonl": lambda p: pd.read_json(p, lines=True)}
    labels = reader.get(suffix, lambda p: pd.read_csv(p, dtype={"request_id": str}))(labels_path)
    path = records.write_labels(records_dir, labels, s3_endpoint_url)
    click.echo(f"{len(labels)} labels -> {path}")
