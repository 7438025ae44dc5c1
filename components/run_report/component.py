"""KFP component: the run's one-page HTML report, for the KFP UI."""

from typing import List

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Output,
)

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def run_report(
    spans_read: List[int],
    baseline_schema: Input[Artifact],
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    data_valid: bool,
    anomalies: Input[Artifact],
    schema: Input[Artifact],
    drift_metrics: Input[Metrics],
    anomalies_report: Input[Markdown],
    report: Output[HTML],
    notify_email_to: List[str],
    notify_email_from: str,
    notify_smtp_host: str,
    notify_smtp_port: int,
    notify_smtp_starttls: bool,
    notify_on: List[str],
    blessing: Input[Artifact] = None,
    classification_metrics: Input[ClassificationMetrics] = None,
    evaluation_report: Input[Markdown] = None,
    infra_blessing: Input[Artifact] = None,
    infra_report: Input[Markdown] = None,
    pushed_model: Input[Artifact] = None,
    rollout_report: Input[Markdown] = None,
    tuning: Input[Artifact] = None,
):
    """Writes one self-contained HTML page for the run from its tasks' artifacts: decisions and
    reasons, data and anomalies, drift and skew per feature (a chart), candidate vs baseline, ROC
    and confusion matrix, infra latency, and the tasks' Markdown reports.

    For blocked runs too: the artifacts of the tasks after a failed gate are optional (compiled
    for a cluster those tasks did not run), and the page says which gate stopped the run and
    why. The page loads nothing (inline styles and SVG), so the KFP UI shows it as it is.

    Args:
        spans_read: select_span's spans.
        baseline_schema: load_baseline's schema (metadata ``version``: the version the run was
            judged against, None on a cold start).
        train_data: ingest's train split (metadata ``rows``; the rows themselves are not read).
        eval_data: ingest's eval split (metadata ``rows``; the rows themselves are not read).
        data_valid: validate_data's verdict.
        anomalies: validate_data's anomalies (metadata ``anomaly_count``, ``blocking_count``,
            ``summary``).
        schema: validate_data's schema (metadata ``source``).
        drift_metrics: validate_data's drift and skew per feature.
        anomalies_report: validate_data's Markdown report.
        report: Output: the page; metadata ``data_valid``, ``blessed``, ``infra_blessed``
            (None: not decided), ``pushed_version`` (None: nothing pushed), ``baseline``,
            ``outcome``; ``notified`` (per sink tried: ``sink``, ``target`` host, ``ok``,
            ``error``) when a notification was sent or tried.
        blessing: evaluate's blessing (None: not evaluated).
        classification_metrics: evaluate's ROC and confusion matrix (None: not evaluated).
        evaluation_report: evaluate's Markdown report (None: not evaluated).
        infra_blessing: infra_validate's infra blessing (None: not infra-validated).
        infra_report: infra_validate's Markdown report (None: not infra-validated).
        pushed_model: rollout's pushed model (None: rollout did not run).
        rollout_report: rollout's Markdown report (None: rollout did not run).
        tuning: tune's best hyperparameters (None, or metadata ``tuned`` False: no search).
        notify_email_to: Email recipients of the run's notification ([]: no email).
        notify_email_from: Its sender ("": the SMTP username if it is an address, else
            ctloop@<host>).
        notify_smtp_host: The SMTP server ("": no email).
        notify_smtp_port: Its port (465: implicit TLS).
        notify_smtp_starttls: STARTTLS before login and sending (not on port 465).
        notify_on: The outcomes that send a message (succeeded, blocked; failed runs are
            notify_failure's).
    """
    from ctloop.components.run_report import logic
    from ctloop.local import task_exit

    task_exit.install()

    found = logic.build(spans_read, data_valid, {
        "baseline_schema": baseline_schema, "train_data": train_data, "eval_data": eval_data,
        "anomalies": anomalies, "schema": schema, "drift_metrics": drift_metrics,
        "anomalies_report": anomalies_report, "blessing": blessing,
        "classification_metrics": classification_metrics,
        "evaluation_report": evaluation_report, "infra_blessing": infra_blessing,
        "infra_report": infra_report, "pushed_model": pushed_model,
        "rollout_report": rollout_report, "tuning": tuning})
    report.metadata.update(logic.write(found, report.path))
    print(f"run report: {report.metadata['outcome']}")
    # After the page: a sink that is down is logged and recorded, never fails the run. The
    # webhook URL and SMTP login come from the environment or the mounted Secret only.
    from ctloop import notify

    sent = notify.send(logic.message(found, report.metadata, report.uri),
                       notify.Settings.from_environment(
                           notify_email_to=notify_email_to, notify_email_from=notify_email_from,
                           notify_smtp_host=notify_smtp_host, notify_smtp_port=notify_smtp_port,
                           notify_smtp_starttls=notify_smtp_starttls, notify_on=notify_on,
                           secret_dir=notify.SECRET_DIR))
    if sent:
        report.metadata["notified"] = [result.as_metadata() for result in sent]
