"""The "failed" message of a pipeline run from its final status (no kfp import): what
notify_failure sends as the exit task of the run's ``dsl.ExitHandler``."""

from __future__ import annotations

from typing import Optional

from ctloop import notify

# PipelineTaskFinalStatus.state of a run that ended well: run_report has reported it already
# (succeeded or blocked by a gate), so the exit task says nothing more.
SUCCEEDED = "SUCCEEDED"


def message(state: str, pipeline_job: str, error_code: Optional[int],
            error_message: Optional[str]) -> Optional[notify.Message]:
    """The message for a run that ended in ``state``; None when it succeeded.

    Args:
        state: The final state KFP gives the exit task (SUCCEEDED, FAILED, CANCELED, ...).
        pipeline_job: The run's resource name (its id on KFP).
        error_code: KFP's error code of the run (None: none).
        error_message: KFP's error message of the run (None or "": none).
    """
    if state == SUCCEEDED:
        return None
    why = " ".join((error_message or "").split()) or "KFP gave no error message"
    numbers = {"state": state, "pipeline run": pipeline_job or "-"}
    if error_code is not None:
        numbers["error code"] = error_code
    return notify.Message(
        outcome=notify.FAILED, title=f"ctloop run failed: {state.lower()}",
        decision=f"The run did not finish: {why}", numbers=numbers,
        links={"pipeline run": pipeline_job} if pipeline_job else {})
