"""ctloop upload / submit / schedule through click's CliRunner, against an in-memory KFP.

``MemoryKfp`` keeps pipelines, versions, experiments, runs and recurring runs the way the KFP API
server does and answers with the same kfp_server_api models; the tests assert the state it ends
in and what the CLI prints. Its methods take a subset of ``kfp.Client``'s parameters, checked
below, so the commands cannot call anything the real client lacks. The real API is e2e's job
(tests/test_e2e_kfp.py).
"""

import contextlib
import datetime
import inspect
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import kfp
import kfp_server_api as api
import pytest
import yaml
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.kfp import api as kfp_api
from ctloop.kfp import compiling
from ctloop.kfp import plan as kfp_plan

HOST = "http://kfp.test:8080"
NAME = "ctloop-continuous-training"
REQUIRED = ["--param", "data_uri=s3://b/data", "--param", "label=churned",
            "--param", "registry_uri=/mnt/registry"]


class MemoryKfp:
    """An in-memory KFP API behind kfp.Client's method names and signatures."""

    PAGE_CAP = 2  # the server returns at most 2 items a page: callers must follow tokens

    def __init__(self):
        self.ids = (f"id{n}" for n in itertools.count(1))
        self.clock = (datetime.datetime(2026, 11, 1, tzinfo=datetime.timezone.utc)
                      + datetime.timedelta(minutes=n) for n in itertools.count())
        self.pipelines, self.versions, self.experiments = {}, {}, {}
        self.runs, self.recurring = {}, {}
        self.final_state = "SUCCEEDED"

    def get_pipeline_id(self, name):
        ids = [p.pipeline_id for p in self.pipelines.values() if p.display_name == name]
        return ids[0] if ids else None

    def get_pipeline(self, pipeline_id):
        return self.pipelines[pipeline_id]

    def upload_pipeline(self, pipeline_package_path, pipeline_name=None, description=None):
        if self.get_pipeline_id(pipeline_name):
            raise api.ApiException(status=409, reason="Conflict")
        pipeline = api.V2beta1Pipeline(pipeline_id=next(self.ids), display_name=pipeline_name,
                                       description=description, created_at=next(self.clock))
        self.pipelines[pipeline.pipeline_id] = pipeline
        self._add_version(pipeline_package_path, pipeline_name, pipeline.pipeline_id, description)
        return pipeline

    def upload_pipeline_version(self, pipeline_package_path, pipeline_version_name,
                                pipeline_id=None, description=None):
        if any(v.display_name == pipeline_version_name for v in self._versions(pipeline_id)):
            raise api.ApiException(status=409, reason="Conflict")
        return self._add_version(pipeline_package_path, pipeline_version_name, pipeline_id,
                                 description)

    def list_pipeline_versions(self, pipeline_id, page_token="", page_size=10):
        items, token = self._page(self._versions(pipeline_id), page_token, page_size)
        return api.V2beta1ListPipelineVersionsResponse(pipeline_versions=items,
                                                       next_page_token=token)

    def get_pipeline_version(self, pipeline_id, pipeline_version_id):
        return self.versions[pipeline_version_id]

    def create_experiment(self, name, description=None):
        for experiment in self.experiments.values():
            if experiment.display_name == name:
                return experiment
        experiment = api.V2beta1Experiment(experiment_id=next(self.ids), display_name=name)
        self.experiments[experiment.experiment_id] = experiment
        return experiment

    def get_experiment(self, experiment_id=None, experiment_name=None):
        for experiment in self.experiments.values():
            if experiment_name in (None, experiment.display_name) and experiment_id in (
                    None, experiment.experiment_id):
                return experiment
        raise ValueError(f"No experiment is found with name {experiment_name}.")

    def run_pipeline(self, experiment_id, job_name, params=None, pipeline_id=None,
                     version_id=None):
        run = api.V2beta1Run(
            run_id=next(self.ids), experiment_id=experiment_id, display_name=job_name,
            pipeline_version_reference=api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=version_id),
            runtime_config=api.V2beta1RuntimeConfig(parameters=params), state="PENDING")
        self.runs[run.run_id] = run
        return run

    def get_run(self, run_id):
        self.runs[run_id].state = self.final_state
        return self.runs[run_id]

    def create_recurring_run(self, experiment_id, job_name, description=None,
                             interval_second=None, cron_expression=None, max_concurrency=1,
                             no_catchup=None, params=None, pipeline_id=None, version_id=None,
                             enabled=True):
        assert (interval_second is None) != (cron_expression is None)  # as kfp.Client demands
        trigger = api.V2beta1Trigger(
            cron_schedule=api.V2beta1CronSchedule(cron=cron_expression)) if cron_expression else (
            api.V2beta1Trigger(periodic_schedule=api.V2beta1PeriodicSchedule(
                interval_second=str(interval_second))))
        run = api.V2beta1RecurringRun(
            recurring_run_id=next(self.ids), experiment_id=experiment_id, display_name=job_name,
            description=description, trigger=trigger, max_concurrency=str(max_concurrency),
            no_catchup=no_catchup, status="ENABLED" if enabled else "DISABLED",
            pipeline_version_reference=api.V2beta1PipelineVersionReference(
                pipeline_id=pipeline_id, pipeline_version_id=version_id),
            runtime_config=api.V2beta1RuntimeConfig(parameters=params))
        self.recurring[run.recurring_run_id] = run
        return run

    def list_recurring_runs(self, page_token="", page_size=10, experiment_id=None):
        runs = [r for r in self.recurring.values() if r.experiment_id == experiment_id]
        items, token = self._page(runs, page_token, page_size)
        return api.V2beta1ListRecurringRunsResponse(recurring_runs=items, next_page_token=token)

    def enable_recurring_run(self, recurring_run_id):
        self.recurring[recurring_run_id].status = "ENABLED"

    def disable_recurring_run(self, recurring_run_id):
        self.recurring[recurring_run_id].status = "DISABLED"

    def delete_recurring_run(self, recurring_run_id):
        del self.recurring[recurring_run_id]

    def _add_version(self, path, name, pipeline_id, description):
        docs = list(yaml.safe_load_all(Path(path).read_text()))
        version = api.V2beta1PipelineVersion(
            pipeline_id=pipeline_id, pipeline_version_id=next(self.ids), display_name=name,
            description=description, created_at=next(self.clock), pipeline_spec=docs[0])
        self.versions[version.pipeline_version_id] = version
        return version

    def _versions(self, pipeline_id):
        return [v for v in self.versions.values() if v.pipeline_id == pipeline_id]

    def _page(self, items, token, size):
        start = int(token or 0)
        end = start + min(size, self.PAGE_CAP)
        return items[start:end], str(end) if end < len(items) else ""

    # What the tests read back.
    def version_names(self):
        return [v.display_name for v in self.versions.values()]

    def schedules(self):
        return {r.display_name: r for r in self.recurring.values()}


def test_memory_kfp_calls_only_what_kfp_client_has():
    for name, method in inspect.getmembers(MemoryKfp, inspect.isfunction):
        if name.startswith("_") or name in ("version_names", "schedules"):
            continue
        real = inspect.signature(getattr(kfp.Client, name)).parameters
        assert set(inspect.signature(method).parameters) <= set(real), name


@pytest.fixture
def kfp_server():
    return MemoryKfp()


@pytest.fixture
def cli(kfp_server, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)

    def invoke(*args, client=kfp_server, env=None):
        return CliRunner().invoke(main, [str(a) for a in args], obj={"kfp_client": client},
                                  env=env)

    return invoke


@pytest.fixture
def package(tmp_path):
    path = tmp_path / "ct_pipeline.yaml"
    shutil.copy(compiling.PIPELINE_YAML, path)
    return path


def _ok(result):
    assert result.exit_code == 0, result.output
    return result.output


def _error(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    return line


# --- upload --------------------------------------------------------------------------------


def test_first_upload_creates_the_pipeline_then_the_same_spec_uploads_nothing(
        cli, kfp_server, package):
    digest = kfp_plan.spec_hash(package.read_text())
    out = _ok(cli("upload", "--host", HOST, "--package", package))
    (pipeline,) = kfp_server.pipelines.values()
    (version,) = kfp_server.versions.values()
    assert pipeline.display_name == NAME and kfp_plan.tagged_hash(version.description) == digest
    assert out.splitlines() == [
        f"uploaded {NAME} version {NAME} (spec {digest[:12]})",
        f"{HOST}/#/pipelines/details/{pipeline.pipeline_id}/version/{version.pipeline_version_id}"]
    out = _ok(cli("upload", "--host", HOST, "--package", package))
    assert out.startswith(f"unchanged: spec already {NAME} version {NAME}")
    assert kfp_server.version_names() == [NAME]


def test_changed_spec_becomes_a_version_named_after_the_commit(cli, kfp_server, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    package = repo / "ct_pipeline.yaml"
    shutil.copy(compiling.PIPELINE_YAML, package)
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "ct"], check=True)
    commit = kfp_api.git_state(repo).commit
    _ok(cli("upload", "--host", HOST, "--package", package))
    compiling.set_image(package, "registry.example/ctloop-pipeline:2")  # a new spec, uncommitted
    assert kfp_api.git_state(repo) == kfp_api.GitState(commit, True)
    out = _ok(cli("upload", "--host", HOST, "--package", package))
    assert out.startswith(f"uploaded {NAME} version {commit}-dirty ")
    subprocess.run([*git, "commit", "-qam", "image"], check=True)
    new_commit = kfp_api.git_state(repo).commit
    _ok(cli("upload", "--host", HOST, "--package", package))  # same spec, new commit: nothing
    compiling.set_image(package, "registry.example/ctloop-pipeline:3")
    subprocess.run([*git, "commit", "-qam", "image 3"], check=True)
    out = _ok(cli("upload", "--host", HOST, "--package", package))
    assert kfp_server.version_names() == [NAME, f"{commit}-dirty", kfp_api.git_state(repo).commit]
    assert new_commit != kfp_api.git_state(repo).commit and "uploaded" in out


def test_outside_git_the_version_is_named_after_the_spec(cli, kfp_server, package, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(package.parent.parent))
    _ok(cli("upload", "--host", HOST, "--package", package))
    compiling.set_image(package, "other:1")
    out = _ok(cli("upload", "--host", HOST, "--package", package, "--pipeline-name", NAME))
    digest = kfp_plan.spec_hash(package.read_text())
    assert out.startswith(f"uploaded {NAME} version spec-{digest[:12]} ")


def test_explicit_version_name_clash_and_dry_run(cli, kfp_server, package):
    _ok(cli("upload", "--host", HOST, "--package", package))
    compiling.set_image(package, "other:1")
    assert _ok(cli("upload", "--host", HOST, "--package", package, "--version-name", "v2",
                   "--dry-run")).startswith("would create version v2 of pipeline ")
    assert kfp_server.version_names() == [NAME]
    _ok(cli("upload", "--host", HOST, "--package", package, "--version-name", "v2"))
    compiling.set_image(package, "other:2")
    line = _error(cli("upload", "--host", HOST, "--package", package, "--version-name", "v2"))
    assert "--version-name 'v2': pipeline 'ctloop-continuous-training' already has a version" in (
        line)


def test_upload_rejects_a_file_that_is_not_a_compiled_pipeline(cli, tmp_path):
    bad = tmp_path / "notes.yaml"
    bad.write_text("just: notes\n")
    line = _error(cli("upload", "--host", HOST, "--package", bad))
    assert line == (f"Error: {bad} is not a compiled KFP pipeline (no pipelineInfo.name); "
                    "compile it with `ctloop compile`")


def test_host_is_required_and_read_from_the_environment(cli, kfp_server, package):
    result = cli("upload", "--package", package)
    assert result.exit_code == 2 and "Missing option '--host'" in result.output
    _ok(cli("upload", "--package", package, env={"KFP_HOST": HOST}))
    assert kfp_server.version_names() == [NAME]


def test_unreachable_api_is_one_line_and_never_shows_the_token(package, monkeypatch):
    monkeypatch.setenv("KFP_TOKEN", "s3cr3t-token-value")
    result = CliRunner().invoke(main, ["upload", "--host", "http://127.0.0.1:9", "--package",
                                       str(package)])
    line = _error(result)
    assert line.startswith("Error: KFP API at http://127.0.0.1:9 ")
    assert "check --host / KFP_HOST" in line
    assert "s3cr3t" not in result.output


def test_api_refusal_is_one_line(cli, package):
    class Refusing(MemoryKfp):
        def get_pipeline_id(self, name):
            raise api.ApiException(status=403, reason="Forbidden")

    line = _error(cli("upload", "--host", HOST, "--package", package, client=Refusing()))
    assert line.startswith(f"Error: KFP API at {HOST} answered 403 Forbidden to listing pipeline")


# --- submit --------------------------------------------------------------------------------


def test_submit_runs_the_latest_version_with_typed_parameters(cli, kfp_server, package):
    _ok(cli("upload", "--host", HOST, "--package", package))
    out = _ok(cli("submit", "--host", HOST, *REQUIRED, "--param", "epochs=3", "--param",
                  'exclude=["customer_id"]', "--param", "min_auc=0.65"))
    (run,) = kfp_server.runs.values()
    assert run.runtime_config.parameters == {
        "data_uri": "s3://b/data", "label": "churned", "registry_uri": "/mnt/registry",
        "epochs": 3, "exclude": ["customer_id"], "min_auc": 0.65}
    (version,) = kfp_server.versions.values()
    assert run.pipeline_version_reference.pipeline_version_id == version.pipeline_version_id
    assert kfp_server.experiments[run.experiment_id].display_name == "ctloop"
    assert out.strip() == (f"run {run.run_id} of {NAME} version {NAME}: "
                           f"{HOST}/#/runs/details/{run.run_id}")


def test_submit_wait_reports_the_final_state(cli, kfp_server, package):
    _ok(cli("upload", "--host", HOST, "--package", package))
    assert _ok(cli("submit", "--host", HOST, *REQUIRED, "--wait")).splitlines()[-1].endswith(
        "SUCCEEDED")
    kfp_server.final_state = "FAILED"
    line = _error(cli("submit", "--host", HOST, *REQUIRED, "--wait"))
    assert " ended FAILED; its tasks' logs say why: " in line
    kfp_server.final_state = "RUNNING"
    line = _error(cli("submit", "--host", HOST, *REQUIRED, "--wait", "--timeout", 1))
    assert "is still RUNNING after 1 s; it goes on: " in line


@pytest.mark.parametrize(("args", "message"), [
    (["--param", "epochs"], "--param 'epochs' is not NAME=VALUE"),
    (["--param", "epochs=many"], "epochs='many' is not an integer such as 10"),
    (["--param", "epoch=3"], "--param: epoch is not a parameter of this pipeline"),
    (["--version-name", "nope"], "pipeline version 'nope' of 'ctloop-continuous-training' does "
                                 "not exist"),
])
def test_submit_bad_input(cli, kfp_server, package, args, message):
    _ok(cli("upload", "--host", HOST, "--package", package))
    result = cli("submit", "--host", HOST, *REQUIRED, *args)
    assert message in _error(result, code=result.exit_code) and result.exit_code in (1, 2)
    assert not kfp_server.runs


def test_submit_needs_required_parameters_and_an_uploaded_pipeline(cli, kfp_server, package):
    assert "pipeline 'ctloop-continuous-training' does not exist on this KFP; run `ctloop " \
           "upload` first" in _error(cli("submit", "--host", HOST))
    _ok(cli("upload", "--host", HOST, "--package", package))
    assert "required parameter(s) data_uri, label, registry_uri missing" in _error(
        cli("submit", "--host", HOST))


# --- schedule ------------------------------------------------------------------------------


def _write(path, items, **top):
    path.write_text(yaml.safe_dump({**top, "schedules": items}))
    return path


NIGHTLY = {"name": "nightly", "cron": "0 3 * * *", "parameters": {
    "data_uri": "s3://b/data", "label": "churned", "registry_uri": "s3://b/registry",
    "serving_target": "kserve"}}


def test_schedule_apply_is_idempotent(cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    hourly = {**NIGHTLY, "name": "hourly", "cron": None, "interval": "1h", "max_concurrency": 2}
    del hourly["cron"]
    path = _write(tmp_path / "s.yaml", [NIGHTLY, hourly])
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert out.splitlines() == [
        f"create nightly (cron 0 3 * * *, version {NAME})",
        f"create hourly (every 3600 s, version {NAME})",
        "2 schedule(s) declared, 2 change(s) applied"]
    runs = kfp_server.schedules()
    assert runs["nightly"].trigger.cron_schedule.cron == "0 0 3 * * *"
    assert runs["nightly"].no_catchup is True and runs["nightly"].max_concurrency == "1"
    assert runs["hourly"].trigger.periodic_schedule.interval_second == "3600"
    assert runs["hourly"].max_concurrency == "2"
    assert runs["nightly"].runtime_config.parameters == NIGHTLY["parameters"]
    before = {name: run.recurring_run_id for name, run in runs.items()}
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert out.splitlines()[-1] == "2 schedule(s) declared, 0 change(s) applied"
    assert {n: r.recurring_run_id for n, r in kfp_server.schedules().items()} == before


def test_schedule_apply_changes_pauses_and_prunes(cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    other = {**NIGHTLY, "name": "other"}
    path = _write(tmp_path / "s.yaml", [NIGHTLY, other])
    _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    old_id = kfp_server.schedules()["nightly"].recurring_run_id
    _write(path, [{**NIGHTLY, "cron": "30 4 * * 1-5"}, {**other, "enabled": False}])
    assert _ok(cli("schedule", "apply", "--host", HOST, "--file", path, "--dry-run")).splitlines(
    ) == [f"would delete nightly (changed, {old_id})",
          f"would create nightly (cron 30 4 * * 1-5, version {NAME})",
          "would pause other", "2 schedule(s) declared, 3 change(s) planned"]
    _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    runs = kfp_server.schedules()
    assert runs["nightly"].recurring_run_id != old_id
    assert runs["nightly"].trigger.cron_schedule.cron == "0 30 4 * * 1-5"
    assert runs["other"].status == "DISABLED"
    _write(path, [NIGHTLY])
    _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert set(kfp_server.schedules()) == {"nightly", "other"}  # without --prune, kept
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", path, "--prune"))
    assert "delete other (not declared, " in out and set(kfp_server.schedules()) == {"nightly"}


def test_latest_follows_uploads_and_pinned_versions_stay(cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    pinned = {**NIGHTLY, "name": "pinned", "pipeline_version": NAME}
    path = _write(tmp_path / "s.yaml", [NIGHTLY, pinned])
    _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    compiling.set_image(package, "other:1")
    _ok(cli("upload", "--host", HOST, "--package", package, "--version-name", "v2"))
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert "create nightly (cron 0 3 * * *, version v2)" in out and "unchanged pinned" in out
    versions = {v.pipeline_version_id: v.display_name for v in kfp_server.versions.values()}
    runs = kfp_server.schedules()
    assert versions[runs["nightly"].pipeline_version_reference.pipeline_version_id] == "v2"
    assert versions[runs["pinned"].pipeline_version_reference.pipeline_version_id] == NAME


def test_schedule_apply_checks_parameters_before_changing_anything(
        cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    bad = {**NIGHTLY, "parameters": {**NIGHTLY["parameters"], "epochs": "ten"}}
    path = _write(tmp_path / "s.yaml", [bad])
    line = _error(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert line == (f"Error: {path}: schedule 'nightly': epochs='ten' is not an integer such as "
                    "10; epochs is a NUMBER_INTEGER parameter")
    assert not kfp_server.recurring and not kfp_server.experiments


def test_schedule_apply_bad_cron_fails_before_connecting(tmp_path):
    path = _write(tmp_path / "s.yaml", [{**NIGHTLY, "cron": "0 3 * *"}])
    result = CliRunner().invoke(main, ["schedule", "apply", "--host", "http://127.0.0.1:9",
                                       "--file", str(path)], obj={})
    assert _error(result).startswith(f"Error: {path}: schedule 'nightly': cron '0 3 * *' has 4 "
                                     "fields, not 5")


def test_schedule_list_pause_resume_delete(cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    assert _ok(cli("schedule", "list", "--host", HOST)) == (
        "no recurring runs in experiment 'ctloop'\n")
    _ok(cli("schedule", "apply", "--host", HOST, "--file", _write(tmp_path / "s.yaml",
                                                                   [NIGHTLY])))
    run = kfp_server.schedules()["nightly"]
    version_id = run.pipeline_version_reference.pipeline_version_id
    assert _ok(cli("schedule", "list", "--host", HOST)).splitlines() == [
        f"nightly\tENABLED\tcron 0 3 * * *\tversion {version_id}\tctloop\t{run.recurring_run_id}"]
    assert _ok(cli("schedule", "pause", "nightly", "--host", HOST)) == (
        f"paused nightly ({run.recurring_run_id})\n")
    assert run.status == "DISABLED"
    _ok(cli("schedule", "resume", "nightly", "--host", HOST))
    assert run.status == "ENABLED"
    assert "schedule 'ghost': 0 recurring runs of that name in experiment 'ctloop', not 1" in (
        _error(cli("schedule", "pause", "ghost", "--host", HOST)))
    _ok(cli("schedule", "delete", "nightly", "--host", HOST))
    assert not kfp_server.recurring


def test_paging_follows_tokens(kfp_server, package, tmp_path):
    experiment = kfp_server.create_experiment("ctloop")
    for n in range(5):
        kfp_server.create_recurring_run(experiment.experiment_id, f"r{n}", cron_expression="0 0 * "
                                        "* * *")
    names = [r.display_name for r in kfp_api.list_recurring_runs(kfp_server,
                                                                 experiment.experiment_id)]
    assert names == ["r0", "r1", "r2", "r3", "r4"]


def test_schedules_example_applies(cli, kfp_server, package, tmp_path):
    _ok(cli("upload", "--host", HOST, "--package", package))
    monitor_package = tmp_path / "monitor_pipeline.yaml"
    shutil.copy(compiling.MONITOR_PIPELINE_YAML, monitor_package)
    _ok(cli("upload", "--host", HOST, "--package", monitor_package))
    example = Path(__file__).resolve().parents[1] / "schedules.yaml"
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", example))
    assert out.splitlines()[-1] == "3 schedule(s) declared, 3 change(s) applied"
    assert kfp_server.schedules()["weekly-full-retrain"].status == "DISABLED"
    assert kfp_server.schedules()["monitor-hourly"].status == "DISABLED"


# --- one settings file for run, submit and schedules ----------------------------------------


def test_one_config_file_gives_run_submit_and_schedules_the_same_parameters(
        cli, kfp_server, package, tmp_path, monkeypatch):
    from ctloop.data import datagen
    from ctloop.local import runner as local_run

    datagen.write_spans(tmp_path / "data", 1, rows=50)
    settings = {
        "data_uri": str(tmp_path / "data"), "label": "churned", "exclude": ["customer_id"],
        "model_name": "churn", "epochs": 3, "hidden_units": [32, 16], "learning_rate": 0.01,
        "min_auc": None, "max_auc_decrease": 0.02, "anomaly_policy": {"CTLOOP_DRIFT": "warn"},
        "eval_percent": 25, "warm_start": True, "s3_endpoint_url": "http://s3.test:9000"}
    config = tmp_path / "ctloop.yaml"
    config.write_text(yaml.safe_dump(settings))
    expected = {**settings, "min_auc": -1.0}  # the pipeline's "none"

    runs = []
    monkeypatch.setattr(local_run, "run",
                        lambda params, workdir, **_: runs.append(params) or {})
    monkeypatch.setattr(local_run, "describe", lambda summary: "ran")
    monkeypatch.setattr(local_run, "output_to", lambda path: contextlib.nullcontext())
    _ok(cli("run", "-c", config, "--workdir", tmp_path / "w", "--serving-python",
            sys.executable))
    (local,) = runs

    _ok(cli("upload", "--host", HOST, "--package", package))
    _ok(cli("submit", "--host", HOST, "-c", config, "--param", "registry_uri=s3://b/registry"))
    (submitted,) = [run.runtime_config.parameters for run in kfp_server.runs.values()]

    schedules_file = tmp_path / "schedules.yaml"
    schedules_file.write_text(yaml.safe_dump({"config": "ctloop.yaml", "schedules": [{
        "name": "nightly", "cron": "0 3 * * *", "parameters": {
            "registry_uri": "s3://b/registry", "serving_target": "kserve"}}]}))
    _ok(cli("schedule", "apply", "--host", HOST, "--file", schedules_file))
    scheduled = kfp_server.schedules()["nightly"].runtime_config.parameters

    for parameters in (local, submitted, scheduled):
        assert {key: parameters[key] for key in expected} == expected
    assert submitted == {**expected, "registry_uri": "s3://b/registry"}
    assert scheduled == {**expected, "registry_uri": "s3://b/registry",
                         "serving_target": "kserve"}


def test_submit_checks_its_config_file_before_connecting(tmp_path):
    config = tmp_path / "ctloop.yaml"
    config.write_text("label: churned\nepochs: -1\n")
    result = CliRunner().invoke(main, ["submit", "--host", "http://127.0.0.1:9", "-c",
                                       str(config)])
    assert _error(result) == (f"Error: config file {config}: epochs: -1 is not allowed: epochs "
                              "-1 is invalid: use at least 1")


def test_schedule_apply_runs_each_schedule_on_the_pipeline_it_names(cli, kfp_server, package,
                                                                     tmp_path):
    monitor_package = tmp_path / "monitor_pipeline.yaml"
    shutil.copy(compiling.MONITOR_PIPELINE_YAML, monitor_package)
    _ok(cli("upload", "--host", HOST, "--package", package))
    _ok(cli("upload", "--host", HOST, "--package", monitor_package))
    watch = {"name": "monitor-hourly", "cron": "5 * * * *", "pipeline": "ctloop-monitor",
             "parameters": {"records_uri": "s3://b/records", "registry_uri": "s3://b/registry",
                            "window": "1h", "min_rows": 300,
                            "ct_parameters": NIGHTLY["parameters"]}}
    path = _write(tmp_path / "s.yaml", [NIGHTLY, watch], pipeline=NAME)
    out = _ok(cli("schedule", "apply", "--host", HOST, "--file", path))
    assert out.splitlines() == [
        f"create nightly (cron 0 3 * * *, version {NAME})",
        "create monitor-hourly (cron 5 * * * *, version ctloop-monitor)",
        "2 schedule(s) declared, 2 change(s) applied"]
    runs = kfp_server.schedules()
    pipelines = {p.pipeline_id: p.display_name for p in kfp_server.pipelines.values()}
    assert {name: pipelines[run.pipeline_version_reference.pipeline_id]
            for name, run in runs.items()} == {"nightly": NAME, "monitor-hourly": "ctloop-monitor"}
    assert runs["monitor-hourly"].runtime_config.parameters["min_rows"] == 300
    assert _ok(cli("schedule", "apply", "--host", HOST, "--file", path)).splitlines()[-1] == (
        "2 schedule(s) declared, 0 change(s) applied")


def test_trigger_run_starts_the_ct_run_as_submit_does_and_records_it(kfp_server, package,
                                                                     tmp_path, cli):
    import json

    from ctloop.components.trigger_run import logic
    from ctloop.errors import ConfigError

    _ok(cli("upload", "--host", HOST, "--package", package))
    state = tmp_path / "trigger-state.json"
    state.write_text(json.dumps({"last_run": {"time": 1.0, "command": ["kfp-run", NAME]}}))
    parameters = {"data_uri": "s3://b/data", "label": "churned", "registry_uri": "s3://b/r",
                  "epochs": 3}
    run_id = logic.run(kfp_server, HOST, NAME, "latest", "ctloop", parameters, str(state))
    run = kfp_server.runs[run_id]
    assert run.runtime_config.parameters == parameters
    assert kfp_server.experiments[run.experiment_id].display_name == "ctloop"
    recorded = json.loads(state.read_text())["last_run"]
    assert recorded["kfp_run_id"] == run_id and recorded["pipeline_version"] == NAME
    # Parameters the CT pipeline refuses: no run, and the state says why.
    with pytest.raises(ConfigError, match="epochs='many'"):
        logic.run(kfp_server, HOST, NAME, "latest", "ctloop", {**parameters, "epochs": "many"},
                  str(state))
    assert len(kfp_server.runs) == 1
    assert "epochs='many'" in json.loads(state.read_text())["last_run"]["error"]


def test_trigger_run_token_comes_from_the_environment_or_the_projected_token(tmp_path,
                                                                             monkeypatch):
    from ctloop.components.trigger_run import logic

    monkeypatch.delenv(logic.TOKEN_ENV, raising=False)
    monkeypatch.setenv(logic.SA_TOKEN_PATH_ENV, str(tmp_path / "none"))
    assert logic.token() is None
    (tmp_path / "token").write_text("projected\n")
    monkeypatch.setenv(logic.SA_TOKEN_PATH_ENV, str(tmp_path / "token"))
    assert logic.token() == "projected"
    monkeypatch.setenv(logic.TOKEN_ENV, "given")
    assert logic.token() == "given"
