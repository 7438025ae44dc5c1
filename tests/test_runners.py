"""The in-process runner (the default) against kfp.local's SubprocessRunner: on the same data,
the same decisions, the same artifacts and metadata keys, the same files, the same failure."""

import json
import sys
from pathlib import Path

import pytest

from conftest import EXCLUDE, LABEL, child_pids
from ctloop.errors import TaskFailedError
from ctloop.local import in_process, task_exit
from ctloop.local import runner as local_run
from ctloop.registry import LocalRegistry

pytestmark = pytest.mark.local

# What a run decides, in its summary; metric values are compared apart (training on two
# threads is not bit-for-bit repeatable).
DECISIONS = ("span", "spans", "data_fingerprint", "files", "rows", "data_valid", "anomaly_count",
             "blocking_anomaly_count", "previous_span", "schema_source", "baseline_version",
             "blessed", "infra_blessed", "pushed", "promoted", "pushed_version")


def _params(spans_dir, span, serving_python):
    # Straight into production, as the registry both runners leave is compared by its pointer.
    return {"data_uri": str(spans_dir / f"span-{span}"), "label": LABEL, "exclude": EXCLUDE,
            "model_name": "churn", "epochs": 4, "serving_python": serving_python,
            "release_stage": "production"}


@pytest.fixture(scope="module")
def both(spans_dir, serving_python, tmp_path_factory):
    """Per runner: span 1 (a cold start, pushed) then span 3 (corrupt, blocked) in one workdir."""
    found = {}
    for runner in in_process.RUNNERS:
        workdir = tmp_path_factory.mktemp(runner)
        found[runner] = (workdir, [
            local_run.run(_params(spans_dir, span, serving_python), workdir, runner=runner)
            for span in (1, 3)])
    return found


def _shape(run_dir: Path) -> dict:
    """Per task: its output parameters, its output artifacts and their metadata's keys."""
    shape = {}
    for task in local_run.TASKS:
        output = json.loads((run_dir / task / "executor_output.json").read_text())
        parameters = output.get("parameterValues", {})
        if task == "resolve-baseline":  # each workdir's own version 1: another fingerprint
            parameters = {**parameters, "fingerprint": len(parameters["fingerprint"])}
        shape[task] = {
            "parameters": parameters,
            "artifacts": {name: sorted(a["artifacts"][0].get("metadata", {}))
                          for name, a in output.get("artifacts", {}).items()},
        }
    return shape


def _files(run_dir: Path) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


def _decisions(workdir: Path, summary: dict) -> dict:
    """The summary's decisions, with the run's own workdir (in e.g. schema_source) as WORKDIR."""
    return json.loads(json.dumps({k: summary[k] for k in DECISIONS}).replace(
        str(workdir), "WORKDIR"))


def test_both_runners_decide_the_same(both):
    (mine, default), (kfps, subprocess) = both[in_process.IN_PROCESS], both[in_process.KFP_LOCAL]
    for ours, theirs in zip(default, subprocess, strict=True):
        assert _decisions(mine, ours) == _decisions(kfps, theirs)
        assert ours["blessing_reason"].split(":")[0] == theirs["blessing_reason"].split(":")[0]
        assert ours["push_reason"] == theirs["push_reason"]
        assert set(ours["drift"]) == set(theirs["drift"])
        assert set(ours["metrics"]) == set(theirs["metrics"])
        assert ours["skipped"] == theirs["skipped"]  # the corrupt span: nothing trained
        if ours["metrics"]:
            assert ours["metrics"]["auc"] == pytest.approx(theirs["metrics"]["auc"], abs=0.03)
        assert set(ours["timings_s"]) == set(theirs["timings_s"]) == {*local_run.TASKS, "total"}
    # The cold start was pushed, the corrupt span blocked, by either runner.
    assert [s["pushed"] for s in default] == [True, False]


def test_both_runners_write_the_same_artifacts(both):
    pairs = zip(both[in_process.IN_PROCESS][1], both[in_process.KFP_LOCAL][1], strict=True)
    for ours, theirs in pairs:
        mine, kfps = Path(ours["run_dir"]), Path(theirs["run_dir"])
        assert _shape(mine) == _shape(kfps)
        assert _files(mine) == _files(kfps)


def test_both_runners_leave_the_same_registry(both):
    def versions(workdir):
        registry = LocalRegistry(workdir / "registry", "churn")
        return ([(v.number, sorted(v.record()), v.record()["environment"])
                 for v in registry.versions()],
                registry.serving().number)

    assert versions(both[in_process.IN_PROCESS][0]) == versions(both[in_process.KFP_LOCAL][0])


@pytest.mark.parametrize("runner", in_process.RUNNERS)
def test_a_failing_task_fails_the_run_with_its_own_reason(runner, serving_python, tmp_path):
    from ctloop.data import datagen

    rows = datagen.generate_span(datagen.SpanSpec(1, rows=400))
    rows.loc[350:, LABEL] = None
    (tmp_path / "data").mkdir()
    rows.to_csv(tmp_path / "data" / "data.csv", index=False)
    params = {"data_uri": str(tmp_path / "data"), "label": LABEL, "exclude": EXCLUDE,
              "serving_python": serving_python}
    with pytest.raises(TaskFailedError) as failed:
        local_run.run(params, tmp_path / "work", runner=runner)
    reason = f"label column '{LABEL}' has 50 missing values; drop or fill those rows"
    assert str(failed.value) == f"task ingest failed: {reason}"
    (run_dir,) = (tmp_path / "work" / "pipeline_root").iterdir()
    assert (run_dir / "ingest" / task_exit.FAILURE_FILE).read_text() == reason + "\n"
    assert not (run_dir / "ingest" / "executor_output.json").exists()
    assert not (run_dir / "validate-data").exists()  # nothing after the failed task ran


def test_the_in_process_runner_refuses_what_is_not_a_lightweight_component():
    with pytest.raises(RuntimeError, match="lightweight Python components only.*kfp-local"):
        in_process.InProcessTaskHandler("python:3.11", ["echo", "hello"], "/tmp", None)


def test_an_unknown_runner_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="runner 'docker' is not one of in-process, kfp-local"):
        local_run.run({}, tmp_path, runner="docker")
    assert not (tmp_path / "pipeline_root").exists() or not any(
        (tmp_path / "pipeline_root").iterdir())


@pytest.mark.parametrize(("flags", "runner"), [((), "in-process"),
                                               (("--runner", "kfp-local"), "kfp-local")])
def test_ctloop_run_takes_the_runner(flags, runner, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ctloop.cli import main
    from ctloop.data import datagen

    datagen.write_spans(tmp_path / "data", 1, rows=50)
    ran = []
    monkeypatch.setattr(local_run, "run", lambda params, workdir, listener=None, runner=None:
                        ran.append(runner) or {})
    monkeypatch.setattr(local_run, "describe", lambda summary: "ran")
    result = CliRunner().invoke(main, [
        "run", "--data", str(tmp_path / "data"), "--label", LABEL, "--workdir",
        str(tmp_path / "w"), "--serving-python", sys.executable, *flags])
    assert result.exit_code == 0, result.output
    assert ran == [runner]


def test_the_in_process_runner_starts_the_candidates_server_ahead(both):
    """In-process, infra validation's server imported while the run validated, trained and
    evaluated (started with the run: ctloop.serving.ahead); a process per task starts it when
    its task runs. No server is left after either run (the corrupt span's was stopped once its
    data was found invalid)."""
    def where(summary):
        report = Path(summary["reports"]["infra_md"]).read_text()
        return next(line for line in report.splitlines() if line.startswith("The candidate ran"))

    (_, (ours, _)), (_, (theirs, _)) = both[in_process.IN_PROCESS], both[in_process.KFP_LOCAL]
    assert "s ahead of the model (its imports meanwhile)" in where(ours)
    assert "ahead" not in where(theirs)
    assert ours["infra_blessed"] and theirs["infra_blessed"]
    assert child_pids(b"ctloop.serving.ahead") == []
