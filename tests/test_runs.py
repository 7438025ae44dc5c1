"""`ctloop runs` and `ctloop versions`: tables read from a workdir's run folders and a registry."""

import datetime
import json

from click.testing import CliRunner

from ctloop.cli import main
from ctloop.local import task_exit
from ctloop.registry import LocalRegistry

PIPELINE = "ctloop-continuous-training"


def _artifact(metadata):
    return {"artifacts": [{"metadata": metadata}]}


def _write_task(run_dir, task, parameters=None, artifacts=None):
    (run_dir / task).mkdir(parents=True)
    (run_dir / task / "executor_output.json").write_text(json.dumps({
        "parameterValues": parameters or {},
        "artifacts": {name: _artifact(meta) for name, meta in (artifacts or {}).items()}}))


def _complete_run(root, stamp, span, pushed):
    run_dir = root / f"{PIPELINE}-{stamp}"
    _write_task(run_dir, "select-span", {"span": float(span), "spans_read": [float(span)]})
    _write_task(run_dir, "resolve-baseline", {"version": float(span - 1)})
    _write_task(run_dir, "load-baseline", artifacts={"model": {
        "version": float(span - 1) if span > 1 else None}})
    _write_task(run_dir, "ingest")
    _write_task(run_dir, "validate-data", {"Output": True})
    _write_task(run_dir, "train")
    _write_task(run_dir, "evaluate", artifacts={"blessing": {"blessed": pushed}})
    _write_task(run_dir, "infra-validate", artifacts={"infra_blessing": {"infra_blessed": True}})
    _write_task(run_dir, "rollout", artifacts={"pushed_model": {
        "pushed": pushed, "version": 1 if pushed else None,
        "reason": "pushed as version 1; promoted" if pushed else "not pushed: not blessed"}})


def test_runs_lists_each_run_with_its_decisions_and_a_failed_tasks_reason(tmp_path):
    root = tmp_path / "work" / "pipeline_root"
    _complete_run(root, "2026-12-01-10-00-00-000001", 1, pushed=True)
    _complete_run(root, "2026-12-02-10-00-00-000001", 2, pushed=False)
    failed = root / f"{PIPELINE}-2026-12-03-10-00-00-000001"
    _write_task(failed, "select-span", {"span": 3.0, "spans_read": [2.0, 3.0]})
    _write_task(failed, "resolve-baseline", {"version": 1.0})
    _write_task(failed, "load-baseline", artifacts={"model": {"version": 1.0}})
    (failed / "ingest").mkdir()
    (failed / "ingest" / task_exit.FAILURE_FILE).write_text(
        "label column 'churned' has 50 missing values; drop or fill those rows\n")
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "TIME                 SPAN  BASELINE  DATA VALID  BLESSED  INFRA  PUSHED  OUTCOME",
        "2026-12-01 10:00:00  1     none      yes         yes      yes    v1      pushed as "
        "version 1; promoted",
        "2026-12-02 10:00:00  2     v1        yes         NO       yes    -       not pushed: "
        "not blessed",
        "2026-12-03 10:00:00  2,3   v1        -           -        -      -       ingest failed: "
        "label column 'churned' has 50 missing values; drop or fill those rows",
        f"3 run(s); their outputs and reports: {root}/<pipeline>-<time>/"]


def test_runs_of_a_folder_without_runs_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["runs", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: {tmp_path} holds no runs (no "
                                     f"{tmp_path / 'pipeline_root'}); pass the --workdir of "
                                     "`ctloop run`")


def test_versions_lists_metrics_and_which_serves(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "saved_model.pb").write_text("")
    schema = tmp_path / "schema.pbtxt"
    schema.write_text("")
    registry = LocalRegistry(tmp_path / "work" / "registry", "churn")
    pushed = 1767225600.0  # what rollout records as pushed_unix
    registry.push(model, schema, {"spans": [1.0], "metrics": {"auc": 0.71, "precision": 0.5},
                                  "infra": {"p99_ms": 19.46}, "pushed_unix": pushed},
                  expected_serving=None)
    registry.push(model, schema, {"spans": [2.0], "metrics": {"auc": 0.73},
                                  "baseline_version": 1}, expected_serving=1, serve=False)
    result = CliRunner().invoke(main, ["versions", "--workdir", str(tmp_path / "work")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["VERSION", "STATE", "PUSHED", "SPAN", "METRICS", "P99", "MS",
                                "BASELINE"]
    when = datetime.datetime.fromtimestamp(pushed).strftime("%Y-%m-%d %H:%M:%S")
    assert lines[1].split() == ["v1", "serving", *when.split(), "1", "auc=0.7100", "19.5", "-"]
    # A record without pushed_unix (pushed by hand, not by a rollout): no time is shown.
    assert lines[2].split() == ["v2", "-", "-", "2", "auc=0.7300", "-", "v1"]
    config = tmp_path / "ctloop.yaml"
    config.write_text(f"registry_uri: {tmp_path / 'work' / 'registry'}\nmodel_name: other\n")
    result = CliRunner().invoke(main, ["versions", "-c", str(config)])
    assert result.exit_code == 0 and result.output.startswith("no versions of other in ")
