"""notify_failure: the "failed" message from a run's final status; nothing for a run that
succeeded. The sends themselves, to real sinks on 127.0.0.1: tests/test_notify.py."""

import pytest
from kfp.dsl import PipelineTaskFinalStatus

from ctloop import notify
from ctloop.components.notify_failure import logic
from ctloop.components.notify_failure.component import notify_failure

# No sink configured beyond the environment (the pipeline's defaults).
NO_SINKS = {"notify_email_to": [], "notify_email_from": "", "notify_smtp_host": "",
            "notify_smtp_port": notify.SMTP_PORT, "notify_smtp_starttls": True,
            "notify_on": list(notify.OUTCOMES)}


def test_a_run_that_did_not_succeed_is_a_failed_message():
    found = logic.message("CANCELED", "ctloop-continuous-training-x1", None, "")
    assert (found.outcome, found.title) == ("failed", "ctloop run failed: canceled")
    assert found.decision == "The run did not finish: KFP gave no error message"
    assert found.numbers == {"state": "CANCELED", "pipeline run": "ctloop-continuous-training-x1"}
    found = logic.message("FAILED", "", 13, "task train failed:\n   OOMKilled ")
    assert found.decision == "The run did not finish: task train failed: OOMKilled"
    assert found.numbers["error code"] == 13 and found.links == {}


def test_a_run_that_succeeded_was_reported_by_run_report():
    assert logic.message("SUCCEEDED", "ctloop-continuous-training-x1", None, None) is None


@pytest.mark.parametrize("state", ["SUCCEEDED", "FAILED"])
def test_the_component_sends_nothing_when_nothing_is_configured(state, monkeypatch, capsys):
    for name in notify.SECRET_KEYS.values():
        monkeypatch.delenv(name, raising=False)
    status = PipelineTaskFinalStatus(state=state, pipeline_job_resource_name="run-1",
                                     pipeline_task_name="exit-handler-1", error_code=None,
                                     error_message="boom")
    assert notify_failure.python_func(status=status, **NO_SINKS) == []
    out = capsys.readouterr().out
    assert ("run_report has reported it" if state == "SUCCEEDED"
            else "nothing sent (no sink configured)") in out
