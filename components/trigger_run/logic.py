"""trigger_run: start one run of the CT pipeline on KFP from inside a pipeline, the run a drift
episode claimed (``ctloop.monitor.trigger.claim``, in the monitor task before it), and record
its id in the trigger's state.

No kfp import at module level: the KFP API calls are ``ctloop.kfp.api.start_run``, the code
``ctloop submit`` resolves versions and types parameters with (``ctloop.kfp.plan``).
"""

from __future__ import annotations

import os
from typing import Any

from ctloop.kfp import api
from ctloop.monitor import trigger

TOKEN_ENV = "KFP_TOKEN"
# Where multi-user Kubeflow projects a pipeline pod's service-account token for the KFP API.
SA_TOKEN_PATH_ENV = "KF_PIPELINES_SA_TOKEN_PATH"
SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


def token() -> str | None:
    """A bearer token for the KFP API: ``KFP_TOKEN``, else the projected service-account token
    when the pod has one (multi-user Kubeflow), else None (standalone KFP needs none)."""
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV]
    path = os.environ.get(SA_TOKEN_PATH_ENV, SA_TOKEN_PATH)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip() or None
    return None


def run(client: Any, host: str, pipeline_name: str, pipeline_version: str, experiment: str,
        parameters: dict[str, Any], state_uri: str, run_name: str | None = None,
        s3_endpoint_url: str | None = None) -> str:
    """Starts the run and records ``kfp_run_id`` (or the error) in the trigger's state.

    Returns:
        The run's id.

    Raises:
        KfpError, ConfigError: The API refused or failed; the state says so, and the episode
            keeps its claim (no second run for it: the next episode, or a manual
            ``ctloop submit``, retrains).
    """
    try:
        with api.calling(host, f"starting a run of {pipeline_name!r}"):
            started, version = api.start_run(client, pipeline_name, pipeline_version, experiment,
                                             parameters, run_name, "ct_parameters")
    except Exception as exc:
        trigger.record_run(state_uri, {"error": str(exc).splitlines()[0]}, s3_endpoint_url)
        raise
    trigger.record_run(state_uri, {"kfp_run_id": started.run_id,
                                   "pipeline_version": version.display_name}, s3_endpoint_url)
    return started.run_id
