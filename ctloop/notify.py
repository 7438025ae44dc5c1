"""Run notifications: when a CT run ends (succeeded, blocked by a gate, or failed), one message
with the decision, the key numbers and where the reports are, sent to a chat webhook (an HTTP POST
of ``{"text": ...}``, which Slack, Mattermost and Google Chat incoming webhooks take) and by email
over SMTP.

Secrets (the webhook URL, which is a credential for Slack; the SMTP login) come only from the
environment (``CTLOOP_NOTIFY_WEBHOOK_URL``, ``CTLOOP_SMTP_USERNAME``, ``CTLOOP_SMTP_PASSWORD``)
or from a mounted Kubernetes Secret's files (``secret_dir``), never from parameters or the
settings file, and are never logged: a sink is named by its kind and host. A sink that is down,
refuses or times out never fails the run: one log line says which sink failed and why, and
``send`` returns a result per sink. Standard library only (no kfp, no TensorFlow): components and
the local runner import it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import smtplib
import socket
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SUCCEEDED, BLOCKED, FAILED = "succeeded", "blocked", "failed"
OUTCOMES = (SUCCEEDED, BLOCKED, FAILED)
WEBHOOK_URL_ENV = "CTLOOP_NOTIFY_WEBHOOK_URL"
SMTP_USERNAME_ENV = "CTLOOP_SMTP_USERNAME"
SMTP_PASSWORD_ENV = "CTLOOP_SMTP_PASSWORD"
# The Kubernetes Secret's keys -> the environment variables they stand for.
SECRET_KEYS = {"webhook_url": WEBHOOK_URL_ENV, "smtp_username": SMTP_USERNAME_ENV,
               "smtp_password": SMTP_PASSWORD_ENV}
SECRET_NAME = "ctloop-notify"
# Where pipelines/notify.py mounts that Secret in a task's container (optional: no Secret, no
# files, nothing configured).
SECRET_DIR = "/etc/ctloop/notify"
SMTP_PORT = 587
SMTPS_PORT = 465  # implicit TLS from the first byte (SMTP_SSL); other ports may STARTTLS
# Short: a run waits for its sinks once, at its end; a sink slower than this is a down sink.
TIMEOUT_S = 5.0
# The pipeline's (and components') notification parameters, by name: what from_environment
# takes besides the secrets.
PARAMETERS = ("notify_email_to", "notify_email_from", "notify_smtp_host", "notify_smtp_port",
              "notify_smtp_starttls", "notify_on")


@dataclasses.dataclass(frozen=True)
class Message:
    """What a run's end says.

    Attributes:
        outcome: "succeeded" (a version pushed, promoted or staged), "blocked" (a gate stopped
            the run) or "failed" (a task raised).
        title: The first line, e.g. "ctloop run succeeded: span 2".
        decision: What was decided and why, in a line or two.
        numbers: Label -> value: the key numbers (AUC, rows, p99, ...), in order.
        links: Label -> a URI or path of a report (the run's page, the run's folder, ...).
    """

    outcome: str
    title: str
    decision: str
    numbers: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    links: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")

    def subject(self) -> str:
        """The email's subject: the title line."""
        return self.title

    def text(self) -> str:
        """The message as plain text (which chat webhooks and email show as it is)."""
        lines = [self.title, self.decision]
        if self.numbers:
            lines += [""] + [f"{name}: {_number(value)}" for name, value in self.numbers.items()]
        if self.links:
            lines += ["", "Reports:"] + [f"{name}: {uri}" for name, uri in self.links.items()]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class SinkResult:
    """How sending to one sink went. ``target`` is the sink's host (never its URL or login);
    ``error`` says why it failed ("" when it did not)."""

    sink: str
    target: str
    ok: bool
    error: str = ""

    def as_metadata(self) -> dict[str, Any]:
        """Plain values for an artifact's metadata (no secret is in a result)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where messages go. Nothing configured (no webhook URL; no SMTP host or no recipient): no
    sink, nothing sent.

    Attributes:
        webhook_url: A chat incoming webhook (secret: from the environment only).
        email_to: Recipients.
        email_from: The sender ("" : the SMTP username if it is an address, else
            ctloop@<this host>).
        smtp_host: The SMTP server.
        smtp_port: Its port (465: implicit TLS).
        smtp_starttls: Upgrade to TLS with STARTTLS before anything else (not on port 465).
        smtp_username: SMTP login (secret: from the environment only; "": no login).
        smtp_password: SMTP password (secret: from the environment only).
        notify_on: The outcomes that send a message.
        timeout_s: Each sink's connection and response timeout.
    """

    webhook_url: str = dataclasses.field(default="", repr=False)
    email_to: tuple[str, ...] = ()
    email_from: str = ""
    smtp_host: str = ""
    smtp_port: int = SMTP_PORT
    smtp_starttls: bool = True
    smtp_username: str = dataclasses.field(default="", repr=False)
    smtp_password: str = dataclasses.field(default="", repr=False)
    notify_on: tuple[str, ...] = OUTCOMES
    timeout_s: float = TIMEOUT_S

    @classmethod
    def from_environment(cls, notify_email_to: Iterable[str] = (), notify_email_from: str = "",
                         notify_smtp_host: str = "", notify_smtp_port: int = SMTP_PORT,
                         notify_smtp_starttls: bool = True,
                         notify_on: Iterable[str] = OUTCOMES,
                         environ: Optional[Mapping[str, str]] = None,
                         secret_dir: Optional[str] = None) -> Settings:
        """The settings from the (non-secret) parameters, and the secrets from ``environ``
        (default ``os.environ``), else from the files of a mounted Secret in ``secret_dir``
        (one file per key of ``SECRET_KEYS``; a missing folder or file: not set).

        Raises:
            ValueError: notify_on names an outcome that does not exist.
        """
        unknown = sorted(set(notify_on) - set(OUTCOMES))
        if unknown:
            raise ValueError(f"notify_on {unknown} are not outcomes; use some of "
                             f"{', '.join(OUTCOMES)}")
        environ = os.environ if environ is None else environ

        def secret(key: str) -> str:
            found = environ.get(SECRET_KEYS[key], "").strip()
            if not found and secret_dir:
                path = Path(secret_dir) / key
                found = path.read_text().strip() if path.is_file() else ""
            return found

        return cls(webhook_url=secret("webhook_url"),
                   email_to=tuple(a.strip() for a in notify_email_to if a.strip()),
                   email_from=notify_email_from, smtp_host=notify_smtp_host,
                   smtp_port=int(notify_smtp_port), smtp_starttls=bool(notify_smtp_starttls),
                   smtp_username=secret("smtp_username"), smtp_password=secret("smtp_password"),
                   notify_on=tuple(notify_on))

    def sinks(self) -> list[str]:
        """The configured sinks' kinds: "webhook", "email"."""
        found = []
        if self.webhook_url:
            found.append("webhook")
        if self.smtp_host and self.email_to:
            found.append("email")
        return found


def send(message: Message, settings: Settings) -> list[SinkResult]:
    """Sends ``message`` to every configured sink, if ``settings.notify_on`` has its outcome.

    Never raises for a sink: a sink that is down, refuses or times out is logged in one line
    (its kind, host and why) and reported as a failed result.

    Returns:
        One result per sink tried, in the order webhook, email; [] when none was.
    """
    if message.outcome not in settings.notify_on:
        log.debug("notify: %s runs are not notified (notify_on: %s)", message.outcome,
                  ", ".join(settings.notify_on))
        return []
    senders = {"webhook": (_webhook_host, _post), "email": (_smtp_host, _mail)}
    sinks = settings.sinks()
    if not sinks:
        log.debug("notify: no sink configured (no %s; no SMTP host or no recipient), nothing "
                  "sent", WEBHOOK_URL_ENV)
    secrets = [s for s in (settings.webhook_url, settings.smtp_username,
                           settings.smtp_password) if s]
    results = []
    for sink in sinks:
        host, sender = senders[sink]
        target = host(settings)
        try:
            sender(message, settings)
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            # OSError: refused, unreachable, timed out, TLS, and urllib's URLError/HTTPError.
            why = _scrub(f"{type(exc).__name__}: {exc}", secrets)
            log.warning("notify: %s (%s) failed: %s; the run goes on", sink, target, why)
            results.append(SinkResult(sink, target, False, why))
        else:
            log.info("notify: %s message sent to %s (%s)", message.outcome, sink, target)
            results.append(SinkResult(sink, target, True))
    return results


def _post(message: Message, settings: Settings) -> None:
    if urlsplit(settings.webhook_url).scheme not in ("http", "https"):
        # Said without the URL: it is the secret.
        raise ValueError(f"{WEBHOOK_URL_ENV} is not an http(s) URL; set it to the chat's "
                         "incoming webhook")
    request = urllib.request.Request(
        settings.webhook_url, data=json.dumps({"text": message.text()}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:  # noqa: S310
        response.read()  # a status >= 400 raised HTTPError already


def _mail(message: Message, settings: Settings) -> None:
    email = EmailMessage()
    email["Subject"] = message.subject()
    email["From"] = settings.email_from or (
        settings.smtp_username if "@" in settings.smtp_username
        else f"ctloop@{socket.gethostname()}")
    email["To"] = ", ".join(settings.email_to)
    email.set_content(message.text())
    if settings.smtp_port == SMTPS_PORT:
        client = smtplib.SMTP_SSL(settings.smtp_host, settings.smtp_port,
                                  timeout=settings.timeout_s)
    else:
        client = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_s)
    with client:
        if settings.smtp_starttls and settings.smtp_port != SMTPS_PORT:
            client.starttls()
        if settings.smtp_username:
            client.login(settings.smtp_username, settings.smtp_password)
        client.send_message(email)


def _webhook_host(settings: Settings) -> str:
    try:
        return urlsplit(settings.webhook_url).hostname or "?"
    except ValueError:
        return "?"


def _smtp_host(settings: Settings) -> str:
    return f"{settings.smtp_host}:{settings.smtp_port}"


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` with any secret in it replaced (a library's error may quote its input)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
