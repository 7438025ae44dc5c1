"""The thin layer between ctloop's plans and a KFP API: reads what plans need, carries plans out.

Nothing here decides anything (``ctloop.kfp.plan`` and ``ctloop.kfp.schedules`` do); it needs a
running KFP, so it is covered by the ``e2e`` tests, which skip when none is reachable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ctloop.errors import KfpError
from ctloop.kfp import plan as kfp_plan
from ctloop.kfp import schedules

PAGE_SIZE = 100
FINISHED = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}


def connect(host: str, token: str | None) -> Any:
    """A ``kfp.Client`` for ``host``, authenticated with a bearer ``token`` when one is given.

    Raises:
        KfpError: The API does not answer at ``host``. The message never holds the token.
    """
    import kfp

    # The client asks the API's health endpoint at construction; urllib3 logs each retry of it
    # as a warning, which would bury the one-line answer below.
    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        # kfp warns on every construction that it needs a v2 backend, which is what it gets.
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore", FutureWarning)
            return kfp.Client(host=host, existing_token=token or None)
    except Exception as exc:  # urllib3 and kfp raise many kinds; all mean "not reachable"
        raise KfpError(
            f"KFP API at {host} does not answer ({_first_line(getattr(exc, 'reason', exc))}); "
            "check --host / KFP_HOST (for kind: make kind-up prints it)") from exc
    finally:
        retries.setLevel(level)


@contextlib.contextmanager
def calling(host: str, what: str) -> Iterator[None]:
    """Turns a failed API call into a one-line ``KfpError`` naming the call and the answer."""
    import kfp_server_api

    try:
        with _quiet():
            yield
    except kfp_server_api.ApiException as exc:
        raise KfpError(f"KFP API at {host} answered {exc.status} {exc.reason} to {what}: "
                       f"{_api_message(exc)}") from exc
    except (OSError, TimeoutError) as exc:
        raise KfpError(f"KFP API at {host} failed during {what} ({_first_line(exc)}); "
                       "check that it is reachable") from exc
    except ValueError as exc:  # kfp.Client's own checks, e.g. two pipelines of one name
        raise KfpError(f"{what} on KFP API at {host}: {_first_line(exc)}") from exc


def find_pipeline(client: Any, name: str) -> Any | None:
    """The ``V2beta1Pipeline`` named ``name``, or None."""
    pipeline_id = client.get_pipeline_id(name)
    return None if pipeline_id is None else client.get_pipeline(pipeline_id)


def list_versions(client: Any, pipeline_id: str) -> list[Any]:
    """Every ``V2beta1PipelineVersion`` of a pipeline."""
    return _all_pages(lambda token: client.list_pipeline_versions(
        pipeline_id=pipeline_id, page_token=token, page_size=PAGE_SIZE), "pipeline_versions")


def list_recurring_runs(client: Any, experiment_id: str) -> list[Any]:
    """Every ``V2beta1RecurringRun`` of an experiment."""
    return _all_pages(lambda token: client.list_recurring_runs(
        experiment_id=experiment_id, page_token=token, page_size=PAGE_SIZE), "recurring_runs")


def version_spec(client: Any, version: Any) -> dict:
    """A ``V2beta1PipelineVersion``'s pipeline spec, fetched when a listing left it out."""
    if version.pipeline_spec is not None:
        return version.pipeline_spec
    return client.get_pipeline_version(version.pipeline_id,
                                       version.pipeline_version_id).pipeline_spec or {}


def find_experiment(client: Any, name: str) -> Any | None:
    """The ``V2beta1Experiment`` named ``name``, or None."""
    try:
        return client.get_experiment(experiment_name=name)
    except ValueError as exc:  # kfp's way of saying "no experiment of that name"
        if str(exc).startswith("No experiment is found"):
            return None
        raise KfpError(f"experiment {name!r}: {exc}") from exc


def upload(client: Any, action: kfp_plan.UploadAction, package: Path) -> tuple[str, str, str]:
    """Carries out an upload plan.

    Returns:
        (pipeline ID, version ID, version name) of the version that holds the spec now.
    """
    if isinstance(action, kfp_plan.KeepVersion):
        return action.pipeline_id, action.version_id, action.version_name
    if isinstance(action, kfp_plan.CreatePipeline):
        pipeline = client.upload_pipeline(str(package), pipeline_name=action.name,
                                          description=action.description)
        # KFP created the pipeline with one version, named after the pipeline.
        (version,) = list_versions(client, pipeline.pipeline_id)
        return pipeline.pipeline_id, version.pipeline_version_id, version.display_name
    version = client.upload_pipeline_version(
        str(package), pipeline_version_name=action.version_name,
        pipeline_id=action.pipeline_id, description=action.description)
    return version.pipeline_id, version.pipeline_version_id, version.display_name


def apply_schedules(client: Any, experiment_id: str, actions: list[schedules.Action]) -> None:
    """Carries out a schedules plan, in order."""
    for action in actions:
        if isinstance(action, schedules.Delete):
            client.delete_recurring_run(action.recurring_run_id)
        elif isinstance(action, schedules.SetEnabled):
            switch = client.enable_recurring_run if action.enabled else (
                client.disable_recurring_run)
            switch(action.recurring_run_id)
        elif isinstance(action, schedules.Create):
            schedule = action.schedule
            client.create_recurring_run(
                experiment_id=experiment_id, job_name=schedule.name,
                description=action.description, cron_expression=schedule.cron,
                interval_second=schedule.interval_second,
                max_concurrency=schedule.max_concurrency, no_catchup=schedule.no_catchup,
                params=action.parameters, pipeline_id=action.pipeline_id,
                version_id=action.version_id, enabled=schedule.enabled)


def start_run(client: Any, pipeline_name: str, version_name: str, experiment: str,
              values: dict[str, Any], run_name: str | None = None,
              source: str = "--param") -> tuple[Any, Any]:
    """Starts one run of a pipeline version by name, as ``ctloop submit`` does: the version
    resolved (``latest`` or a name) and the parameters checked and typed against its spec by
    ``ctloop.kfp.plan``, then ``run_pipeline`` in ``experiment`` (created if missing).

    Returns:
        (the ``V2beta1Run``, the ``V2beta1PipelineVersion`` it runs).

    Raises:
        ConfigError: No such pipeline or version, or parameters its spec refuses.
    """
    import datetime

    from ctloop.errors import ConfigError

    pipeline = find_pipeline(client, pipeline_name)
    if pipeline is None:
        raise ConfigError(f"pipeline {pipeline_name!r} does not exist on this KFP; run "
                          "`ctloop upload` first, or pass the right pipeline name")
    version = kfp_plan.resolve_version(pipeline_name, list_versions(client, pipeline.pipeline_id),
                                       version_name)
    definitions = kfp_plan.pipeline_parameters(version_spec(client, version))
    arguments = kfp_plan.coerce_parameters(definitions, values, source)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    experiment_id = client.create_experiment(experiment).experiment_id
    run = client.run_pipeline(
        experiment_id=experiment_id, job_name=run_name or f"{version.display_name}-{stamp}",
        params=arguments, pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id)
    return run, version


def wait_for_run(client: Any, run_id: str, timeout: float, poll: float = 10.0) -> Any:
    """Polls a run until it finishes (any final state, cancelled included) or ``timeout`` s pass.

    Returns:
        The last ``V2beta1Run`` seen; its ``state`` is not final when the time ran out.
    """
    deadline = time.monotonic() + timeout
    while True:
        run = client.get_run(run_id)
        if run.state in FINISHED or time.monotonic() >= deadline:
            return run
        time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


@dataclasses.dataclass(frozen=True)
class GitState:
    """The commit a spec was compiled from."""

    commit: str | None  # None outside a git work tree
    dirty: bool


def git_state(folder: Path) -> GitState:
    """``git rev-parse --short HEAD`` of ``folder`` and whether its work tree has changes."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True,
                                  check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    return GitState(commit or None, bool(commit and git("status", "--porcelain")))


def _all_pages(fetch: Callable[[str], Any], field: str) -> list[Any]:
    items: list[Any] = []
    token = ""
    while True:
        page = fetch(token)
        items += getattr(page, field) or []
        token = page.next_page_token or ""
        if not token:
            return items


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # kfp.Client prints "Pipeline details: <link>" and similar lines itself; ctloop prints its
    # own summary, once.
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _api_message(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return _first_line(exc.body or "") or "no message"
    return _first_line(str(body.get("message") or body.get("error_message") or body)[:300])


def _first_line(value: Any) -> str:
    lines = str(value).strip().splitlines()
    return lines[0] if lines else type(value).__name__
