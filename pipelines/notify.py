"""A pipeline's run notifications on a cluster: the "failed" message from an exit handler, and the
notification Secret mounted in the tasks that send.

A run that ends (pushed, or blocked by a gate) is reported by its run_report task; a run that
fails (a task raised, the run was cancelled) never reaches it, so the pipeline body runs inside a
``dsl.ExitHandler`` whose exit task, notify_failure, KFP runs however the run ends, with its final
status: it sends only when the run did not succeed.

The webhook URL and the SMTP login are secrets: a Kubernetes Secret (default ``ctloop-notify``,
keys ``webhook_url``, ``smtp_username``, ``smtp_password``) mounted as files at
``ctloop.notify.SECRET_DIR`` in every task that sends. Mounted, not mapped to environment
variables: kfp-kubernetes 1.5.0's ``use_secret_as_env`` has no ``optional`` (a missing Secret or
key would keep the pod from starting, and so fail the very run it should only report on), while
``use_secret_as_volume(optional=True)`` mounts an empty folder when there is no Secret, and a
missing key is a missing file: that sink is simply not configured.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, ContextManager

from kfp import dsl, kubernetes

from ctloop import notify
from ctloop.components.notify_failure.component import notify_failure

EXIT_TASK = "notify-failure"


def parameters(scope: Mapping[str, Any]) -> dict[str, Any]:
    """The notification parameters (``ctloop.notify.PARAMETERS``) out of a pipeline function's
    ``locals()``: what run_report and ``exit_handler`` take, passed on as they are."""
    return {name: scope[name] for name in notify.PARAMETERS}


def mount_secret(task: dsl.PipelineTask, secret_name: Any = notify.SECRET_NAME
                 ) -> dsl.PipelineTask:
    """Mounts the notification Secret ``secret_name`` (a name, or a pipeline parameter) in
    ``task``'s container at ``ctloop.notify.SECRET_DIR``, optional: without it, nothing is
    configured and nothing is sent. Returns ``task``."""
    return kubernetes.use_secret_as_volume(task, secret_name=secret_name,
                                           mount_path=notify.SECRET_DIR, optional=True)


def exit_handler(notify_email_to: Any = (), notify_email_from: Any = "",
                 notify_smtp_host: Any = "", notify_smtp_port: Any = notify.SMTP_PORT,
                 notify_smtp_starttls: Any = True, notify_on: Any = notify.OUTCOMES,
                 notify_secret: Any = notify.SECRET_NAME, enabled: bool = True
                 ) -> ContextManager:
    """The exit handler to wrap a pipeline's body in: its exit task sends the "failed" message
    when the run does not succeed. Call it inside the pipeline function, passing the pipeline's
    parameters (or constants)::

        with exit_handler(notify_email_to=notify_email_to, ..., notify_secret=notify_secret):
            ...  # every task of the pipeline

    Args:
        notify_email_to: Email recipients.
        notify_email_from: The sender.
        notify_smtp_host: The SMTP server ("": no email).
        notify_smtp_port: Its port.
        notify_smtp_starttls: STARTTLS before login and sending.
        notify_on: The outcomes that send a message.
        notify_secret: The Kubernetes Secret with the webhook URL and SMTP login.
        enabled: False (kfp.local, which cannot run ``dsl.ExitHandler``): no exit task, a null
            context; a local run's failure is notified by ``ctloop.local.runner``.
    """
    if not enabled:
        return contextlib.nullcontext()
    task = notify_failure(
        notify_email_to=list(notify_email_to) if isinstance(notify_email_to, (list, tuple))
        else notify_email_to,
        notify_email_from=notify_email_from, notify_smtp_host=notify_smtp_host,
        notify_smtp_port=notify_smtp_port, notify_smtp_starttls=notify_smtp_starttls,
        notify_on=list(notify_on) if isinstance(notify_on, (list, tuple)) else notify_on,
    )
    # Every ending is a new one to report: never a cache hit.
    task.set_caching_options(False).set_display_name(EXIT_TASK)
    mount_secret(task, notify_secret)
    return dsl.ExitHandler(task, name="notify-on-failure")
