"""KFP component: the "failed" notification of a run, as the exit task of its dsl.ExitHandler."""

from typing import List

from kfp import dsl

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def notify_failure(
    status: dsl.PipelineTaskFinalStatus,
    notify_email_to: List[str],
    notify_email_from: str,
    notify_smtp_host: str,
    notify_smtp_port: int,
    notify_smtp_starttls: bool,
    notify_on: List[str],
) -> List[dict]:
    """Sends a "failed" message (the run's state, KFP's error message, the run's name) to the
    configured sinks when the run it guards did not succeed; a run that succeeded was reported by
    run_report already (pushed, or blocked by a gate), so then it sends nothing.

    It is the exit task of a ``dsl.ExitHandler`` (``ctloop.pipelines.notify.exit_handler``): KFP
    runs it however the run ends. The webhook URL and the SMTP login are secrets: from the
    environment (``CTLOOP_NOTIFY_WEBHOOK_URL``, ``CTLOOP_SMTP_USERNAME``,
    ``CTLOOP_SMTP_PASSWORD``) or the Kubernetes Secret mounted at ``/etc/ctloop/notify``, never
    parameters. A sink that is down never fails the task: it is logged and returned as failed.

    Args:
        status: The final status of the run (KFP fills it in; not a pipeline parameter).
        notify_email_to: Email recipients ([]: no email).
        notify_email_from: The sender ("": the SMTP username if it is an address, else
            ctloop@<the pod's host name>).
        notify_smtp_host: The SMTP server ("": no email).
        notify_smtp_port: Its port (465: implicit TLS).
        notify_smtp_starttls: STARTTLS before login and sending (not on port 465).
        notify_on: The outcomes that send a message; without "failed", nothing is sent.

    Returns:
        What was sent: per sink tried, ``sink``, ``target`` (its host), ``ok``, ``error``; []
        when nothing was.
    """
    from ctloop import notify
    from ctloop.components.notify_failure import logic

    found = logic.message(status.state, status.pipeline_job_resource_name, status.error_code,
                          status.error_message)
    if found is None:
        print(f"notify: the run ended {status.state}; run_report has reported it")
        return []
    settings = notify.Settings.from_environment(
        notify_email_to=notify_email_to, notify_email_from=notify_email_from,
        notify_smtp_host=notify_smtp_host, notify_smtp_port=notify_smtp_port,
        notify_smtp_starttls=notify_smtp_starttls, notify_on=notify_on,
        secret_dir=notify.SECRET_DIR)
    results = [r.as_metadata() for r in notify.send(found, settings)]
    print(f"notify: {found.outcome}: "
          + (", ".join(f"{r['sink']} {'ok' if r['ok'] else 'failed'}" for r in results)
             or "nothing sent (no sink configured)"))
    return results
