"""Run notifications against real sinks on 127.0.0.1: an HTTP server that records what is POSTed
(a chat incoming webhook) and an SMTP server (aiosmtpd) that records the mail it is given.

What a succeeded, a blocked and a failed run send (run_report's logic and component, the
notify_failure exit task, a failed local run); a sink that is down or refuses never raises and is
reported; secrets stay out of logs, output and metadata; nothing configured, nothing sent; the
exit handler compiles with the final status and the optional Secret."""

import email
import email.policy
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from ctloop import notify

# A Slack incoming webhook's path is its credential: it must show nowhere.
TOKEN = "T0CTLOOP/B0CTLOOP/sekrit-webhook-token-42"
USER, PASSWORD = "ctloop-bot", "pa55-sekrit-smtp"
SECRETS = (TOKEN, PASSWORD)


class _Recorder(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.bodies.append(json.loads(body))
        self.send_response(403 if self.path.startswith("/refuse") else 200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook(monkeypatch):
    """A chat webhook on 127.0.0.1 whose URL (with TOKEN) is in CTLOOP_NOTIFY_WEBHOOK_URL; its
    ``bodies`` are the JSON bodies POSTed to it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.bodies = []
    server.url = f"http://127.0.0.1:{server.server_port}/services/{TOKEN}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(notify.WEBHOOK_URL_ENV, server.url)
    yield server
    server.shutdown()
    server.server_close()


class _Mailbox:
    def __init__(self):
        self.messages, self.logins = [], []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.logins.append(auth_data.login.decode())
        return AuthResult(success=auth_data.login.decode() == USER
                          and auth_data.password.decode() == PASSWORD)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp(monkeypatch):
    """An SMTP server on 127.0.0.1 (no TLS; AUTH LOGIN/PLAIN of USER, PASSWORD) whose login is in
    the environment; ``mailbox.messages`` is what it received."""
    from aiosmtpd.controller import Controller

    mailbox = _Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=_free_port(),
                            authenticator=mailbox.authenticate, auth_require_tls=False)
    controller.start()
    monkeypatch.setenv(notify.SMTP_USERNAME_ENV, USER)
    monkeypatch.setenv(notify.SMTP_PASSWORD_ENV, PASSWORD)
    controller.mailbox = mailbox
    yield controller
    controller.stop()


def _email(smtp) -> dict:
    """run_report's and notify_failure's parameters that send to ``smtp``."""
    return {"notify_email_to": ["ops@example.com", "ml@example.com"],
            "notify_email_from": "ctloop@example.com", "notify_smtp_host": "127.0.0.1",
            "notify_smtp_port": smtp.port, "notify_smtp_starttls": False,
            "notify_on": list(notify.OUTCOMES)}


def _no_secret(*texts) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret shows in {text[:200]!r}"


@pytest.fixture(autouse=True)
def _no_sink_from_the_machine(monkeypatch):
    for name in notify.SECRET_KEYS.values():
        monkeypatch.delenv(name, raising=False)


def _report(inputs: dict, tmp_path: Path, **settings) -> dict:
    from ctloop.components.run_report.component import run_report
    from ctloop.components.run_report.tests import artifacts

    page = artifacts.page(tmp_path)
    run_report.python_func(report=page, **inputs, **{**artifacts.NO_SINKS, **settings})
    return dict(page.metadata)


def test_a_succeeded_run_is_sent_to_the_webhook_and_by_email(webhook, smtp, tmp_path, caplog,
                                                             capsys):
    from ctloop.components.run_report.tests import artifacts

    caplog.set_level(logging.DEBUG, logger="ctloop")
    meta = _report(artifacts.pushed_run(tmp_path / "in"), tmp_path, **_email(smtp))
    ((body),) = webhook.bodies
    assert set(body) == {"text"}
    text = body["text"]
    page = str(tmp_path / "report.html")
    for line in ("ctloop run succeeded: span 2", "pushed as version 2; promoted",
                 "candidate auc: 0.8194", "baseline auc: 0.8216", "baseline: v1",
                 "rows (train / eval): 3987 / 1013", "infra p99 ms: 17.4", "pushed version: 2",
                 f"run page: {page}"):
        assert line in text.splitlines(), line
    (mail,) = smtp.mailbox.messages
    assert mail["Subject"] == "ctloop run succeeded: span 2"
    assert mail["To"] == "ops@example.com, ml@example.com"
    assert mail["From"] == "ctloop@example.com"
    assert mail.get_content().splitlines() == text.splitlines()
    assert smtp.mailbox.logins == [USER]
    assert meta["notified"] == [
        {"sink": "webhook", "target": "127.0.0.1", "ok": True, "error": ""},
        {"sink": "email", "target": f"127.0.0.1:{smtp.port}", "ok": True, "error": ""}]
    assert meta["outcome"] == "pushed as version 2; promoted"  # the page's decisions as before
    _no_secret(caplog.text, capsys.readouterr().out, json.dumps(meta))


def test_a_blocked_run_says_which_gate_stopped_it(webhook, smtp, tmp_path):
    from ctloop.components.run_report.tests import artifacts

    meta = _report(artifacts.blocked_run(tmp_path / "in"), tmp_path, **_email(smtp))
    lines = webhook.bodies[0]["text"].splitlines()
    assert lines[:2] == ["ctloop run blocked: span 3",
                         f"not pushed: data validation blocked ({artifacts.WHY})"]
    assert "blocking anomalies: 1" in lines and "pushed version: 2" not in lines
    assert smtp.mailbox.messages[0]["Subject"] == "ctloop run blocked: span 3"
    assert [r["ok"] for r in meta["notified"]] == [True, True]


def test_a_canary_rolled_back_is_blocked_and_notify_on_filters(webhook, tmp_path):
    from ctloop.components.run_report import logic
    from ctloop.components.run_report.tests import artifacts

    inputs = artifacts.pushed_run(tmp_path / "in")
    inputs["pushed_model"].metadata.update(promoted=False,
                                           reason="pushed as version 2; canary rolled back")
    run = logic.build(inputs.pop("spans_read"), inputs.pop("data_valid"), inputs)
    message = logic.message(run, logic.write(run, str(tmp_path / "p.html")), "minio://b/p.html")
    assert (message.outcome, message.links) == ("blocked", {"run page": "minio://b/p.html"})
    only_failures = notify.Settings.from_environment(notify_on=["failed"])
    assert notify.send(message, only_failures) == [] and webhook.bodies == []
    assert [r.ok for r in notify.send(message, notify.Settings.from_environment())] == [True]
    assert "canary rolled back" in webhook.bodies[0]["text"]


def test_a_failed_run_on_a_cluster_is_sent_by_the_exit_task(webhook, smtp, caplog):
    from kfp.dsl import PipelineTaskFinalStatus

    from ctloop.components.notify_failure.component import notify_failure

    def status(state, message=None):
        return PipelineTaskFinalStatus(
            state=state, pipeline_job_resource_name="ctloop-continuous-training-8f2c1",
            pipeline_task_name="exit-handler-1", error_code=None if message is None else 9,
            error_message=message)

    assert notify_failure.python_func(status=status("SUCCEEDED"), **_email(smtp)) == []
    assert webhook.bodies == [] and smtp.mailbox.messages == []  # run_report said it already
    caplog.set_level(logging.DEBUG, logger="ctloop")
    sent = notify_failure.python_func(
        status=status("FAILED", "task train failed:\n  OOMKilled"), **_email(smtp))
    assert [(r["sink"], r["ok"]) for r in sent] == [("webhook", True), ("email", True)]
    assert webhook.bodies[0]["text"].splitlines() == [
        "ctloop run failed: failed", "The run did not finish: task train failed: OOMKilled", "",
        "state: FAILED", "pipeline run: ctloop-continuous-training-8f2c1", "error code: 9", "",
        "Reports:", "pipeline run: ctloop-continuous-training-8f2c1"]
    assert smtp.mailbox.messages[0]["Subject"] == "ctloop run failed: failed"
    _no_secret(caplog.text, json.dumps(sent))


def test_sinks_that_are_down_or_refuse_never_raise_and_are_reported(monkeypatch, tmp_path,
                                                                   caplog, webhook):
    from ctloop.components.run_report.tests import artifacts

    closed = _free_port()  # nothing listens there
    monkeypatch.setenv(notify.WEBHOOK_URL_ENV, f"http://127.0.0.1:{closed}/services/{TOKEN}")
    monkeypatch.setenv(notify.SMTP_PASSWORD_ENV, PASSWORD)
    monkeypatch.setenv(notify.SMTP_USERNAME_ENV, USER)
    caplog.set_level(logging.INFO, logger="ctloop")
    meta = _report(artifacts.pushed_run(tmp_path / "in"), tmp_path, notify_email_to=["a@b.c"],
                   notify_smtp_host="127.0.0.1", notify_smtp_port=closed)
    assert (tmp_path / "report.html").is_file() and meta["pushed_version"] == 2
    assert [(r["sink"], r["target"], r["ok"]) for r in meta["notified"]] == [
        ("webhook", "127.0.0.1", False), ("email", f"127.0.0.1:{closed}", False)]
    assert all("refused" in r["error"].lower() for r in meta["notified"]), meta["notified"]
    failed = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert failed == [f"notify: webhook (127.0.0.1) failed: {meta['notified'][0]['error']}; "
                      "the run goes on",
                      f"notify: email (127.0.0.1:{closed}) failed: "
                      f"{meta['notified'][1]['error']}; the run goes on"]
    # A webhook that answers 403, and one that is no URL at all: failed, said without the URL.
    message = notify.Message("failed", "t", "d")
    monkeypatch.setenv(notify.WEBHOOK_URL_ENV, webhook.url.replace("/services/", "/refuse/"))
    (refused,) = notify.send(message, notify.Settings.from_environment())
    assert (refused.ok, refused.error) == (False, "HTTPError: HTTP Error 403: Forbidden")
    monkeypatch.setenv(notify.WEBHOOK_URL_ENV, f"hooks.example/{TOKEN}")
    (bad,) = notify.send(message, notify.Settings.from_environment())
    assert not bad.ok and notify.WEBHOOK_URL_ENV in bad.error
    _no_secret(caplog.text, json.dumps(meta), bad.error, repr(notify.Settings.from_environment()))


def test_a_sink_that_does_not_answer_times_out_quickly(monkeypatch):
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv(notify.WEBHOOK_URL_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}/")
        settings = notify.Settings(webhook_url=notify.Settings.from_environment().webhook_url,
                                   email_to=("a@b.c",), smtp_host="127.0.0.1",
                                   smtp_port=silent.getsockname()[1], timeout_s=0.5)
        results = notify.send(notify.Message("failed", "t", "d"), settings)
    assert [(r.sink, r.ok) for r in results] == [("webhook", False), ("email", False)]
    assert all("timed out" in r.error for r in results), results


def test_with_nothing_configured_nothing_is_sent(webhook, tmp_path, monkeypatch, caplog):
    from ctloop.components.run_report.tests import artifacts

    monkeypatch.delenv(notify.WEBHOOK_URL_ENV)
    caplog.set_level(logging.DEBUG, logger="ctloop.notify")
    meta = _report(artifacts.pushed_run(tmp_path / "in"), tmp_path)
    assert "notified" not in meta and webhook.bodies == []
    assert "notify: no sink configured" in caplog.text
    # Recipients without a server, a server without recipients: no email either.
    for half in ({"notify_email_to": ["a@b.c"]}, {"notify_smtp_host": "127.0.0.1"}):
        assert notify.Settings.from_environment(**half).sinks() == []


def test_secrets_come_from_the_environment_else_the_mounted_secret(tmp_path):
    (tmp_path / "webhook_url").write_text(f"https://hooks.example/{TOKEN}\n")
    (tmp_path / "smtp_password").write_text(PASSWORD)
    found = notify.Settings.from_environment(environ={}, secret_dir=str(tmp_path))
    assert (found.webhook_url, found.smtp_username, found.smtp_password) == (
        f"https://hooks.example/{TOKEN}", "", PASSWORD)
    found = notify.Settings.from_environment(
        environ={notify.WEBHOOK_URL_ENV: "https://env.example/x"}, secret_dir=str(tmp_path))
    assert found.webhook_url == "https://env.example/x"
    assert notify.Settings.from_environment(
        environ={}, secret_dir=str(tmp_path / "absent")).sinks() == []
    _no_secret(repr(found))
    with pytest.raises(ValueError, match=r"notify_on \['pushed'\] are not outcomes"):
        notify.Settings.from_environment(notify_on=["pushed"])


def test_the_exit_handler_compiles_with_the_final_status_and_the_optional_secret(tmp_path):
    from typing import List

    from kfp import compiler, dsl

    from ctloop.pipelines import notify as pipeline_notify

    @dsl.component
    def work(x: str) -> str:
        return x

    @dsl.pipeline(name="notified")
    def notified(notify_email_to: List[str] = [],  # noqa: B006 - a KFP default value
                 notify_email_from: str = "", notify_smtp_host: str = "",
                 notify_smtp_port: int = 587, notify_smtp_starttls: bool = True,
                 notify_on: List[str] = ["failed"],  # noqa: B006 - a KFP default value
                 notify_secret: str = "ctloop-notify"):
        with pipeline_notify.exit_handler(**pipeline_notify.parameters(locals()),
                                          notify_secret=notify_secret):
            work(x="a")

    compiler.Compiler().compile(notified, str(tmp_path / "p.yaml"))
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    tasks = spec["root"]["dag"]["tasks"]
    (handler,) = [name for name in tasks if name.startswith("exit-handler")]
    assert tasks[handler]["taskInfo"]["name"] == "notify-on-failure"
    assert "work" in spec["components"][f"comp-{handler}"]["dag"]["tasks"]
    exit_task = tasks["notify-failure"]
    assert exit_task["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert exit_task["inputs"]["parameters"]["status"] == {
        "taskFinalStatus": {"producerTask": handler}}
    assert {name: source["componentInputParameter"] for name, source in exit_task["inputs"][
        "parameters"].items() if name != "status"} == {name: name for name in notify.PARAMETERS}
    assert exit_task["cachingOptions"] == {}  # never cached
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors["exec-notify-failure"] == {"secretAsVolume": [{
        "mountPath": notify.SECRET_DIR, "optional": True,
        "secretNameParameter": {"componentInputParameter": "notify_secret"}}]}
    assert "work" not in json.dumps(executors)  # the body's tasks get no notification secret
    # kfp.local cannot run an ExitHandler: disabled, a null context and no exit task.
    assert not isinstance(pipeline_notify.exit_handler(enabled=False), dsl.ExitHandler)


@pytest.mark.local
def test_a_failed_local_run_is_sent_with_its_task_and_reason(webhook, serving_python, tmp_path,
                                                             caplog):
    """As tests/test_runners.py makes ingest fail: a label with missing values."""
    from conftest import EXCLUDE, LABEL
    from ctloop.data import datagen
    from ctloop.errors import TaskFailedError
    from ctloop.local import runner as local_run

    rows = datagen.generate_span(datagen.SpanSpec(1, rows=400))
    rows.loc[350:, LABEL] = None
    (tmp_path / "data").mkdir()
    rows.to_csv(tmp_path / "data" / "data.csv", index=False)
    params = {"data_uri": str(tmp_path / "data"), "label": LABEL, "exclude": EXCLUDE,
              "serving_python": serving_python}
    with pytest.raises(TaskFailedError) as failed:
        local_run.run(params, tmp_path / "work", runner="in-process")
    (body,) = webhook.bodies
    (run_dir,) = (tmp_path / "work" / "pipeline_root").iterdir()
    assert body["text"].splitlines() == [
        "ctloop run failed: ingest", str(failed.value), "", "task: ingest", "", "Reports:",
        f"run folder: {run_dir}"]
    assert str(failed.value).startswith("task ingest failed: label column")
    _no_secret(caplog.text)
