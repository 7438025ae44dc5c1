"""The run's page, from a local run's folder (`ctloop report`) and from the tasks' artifacts (the
pipeline's run_report), rendered by a real headless browser."""

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner

from ctloop.cli import main
from ctloop.components.run_report.component import run_report
from ctloop.components.run_report.tests import artifacts
from ctloop.local import task_exit

PIPELINE = "ctloop-continuous-training"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _task(run_dir, task, parameters=None, artifacts=None):
    (run_dir / task).mkdir(parents=True)
    (run_dir / task / "executor_output.json").write_text(json.dumps({
        "parameterValues": parameters or {},
        "artifacts": {name: {"artifacts": [{"metadata": meta}]}
                      for name, meta in (artifacts or {}).items()}}))


@pytest.fixture
def workdir(tmp_path):
    """A workdir with one complete run (span 2 against v1, pushed as v2), as the tasks leave it."""
    run_dir = tmp_path / "work" / "pipeline_root" / f"{PIPELINE}-2026-12-02-10-00-00-000001"
    _task(run_dir, "select-span", {"span": 2.0, "spans_read": [2.0]})
    _task(run_dir, "resolve-baseline", {"version": 1.0, "statistics_span": 1.0})
    _task(run_dir, "load-baseline", artifacts={"model": {"version": 1.0}})
    _task(run_dir, "ingest", artifacts={"train_data": {"rows": 3987.0},
                                        "eval_data": {"rows": 1013.0}})
    _task(run_dir, "validate-data", {"Output": True}, {
        "anomalies": {"anomaly_count": 1.0, "blocking_count": 0.0},
        "schema": {"source": "serving model"},
        "drift_metrics": {"drift.age": 0.0012, "drift.plan <b>": 0.041, "skew.age": 0.003}})
    (run_dir / "validate-data" / "anomalies_report").write_text("# Data validation: span 2\n")
    _task(run_dir, "train")
    _task(run_dir, "evaluate", artifacts={
        "blessing": {"blessed": True, "reason": "passed", "baseline_version": 1,
                     "metrics": {"auc": 0.8194}, "baseline_metrics": {"auc": 0.8216},
                     "checks": [{"metric": "auc change vs serving model", "value": -0.0022,
                                 "threshold": "AUC >= serving model's AUC - 0.01",
                                 "passed": True}]},
        "classification_metrics": {
            "confusionMatrix": {"annotationSpecs": [{"displayName": "0"}, {"displayName": "1"}],
                                "rows": [{"row": [560, 102]}, {"row": [140, 211]}]},
            "confidenceMetrics": [{"falsePositiveRate": x / 10, "recall": min(1, x / 6)}
                                  for x in range(11)]}})
    (run_dir / "evaluate" / "report").write_text("| slice | candidate |\n")
    _task(run_dir, "infra-validate", artifacts={"infra_blessing": {
        "infra_blessed": True, "reason": "served", "p50_ms": 6.9, "p99_ms": 17.4, "rps": 314.0}})
    _task(run_dir, "rollout", artifacts={"pushed_model": {
        "pushed": True, "version": 2, "reason": "pushed as version 2; promoted"}})
    return tmp_path / "work"


def test_report_holds_the_decisions_charts_and_views_and_loads_nothing(workdir):
    result = CliRunner().invoke(main, ["report", str(workdir)])
    assert result.exit_code == 0, result.output
    (run_dir,) = (workdir / "pipeline_root").iterdir()
    page = (run_dir / "report.html").read_text()
    assert result.output.strip() == f"wrote {run_dir / 'report.html'}"
    for text in ("✓ data valid", "✓ blessed", "✓ infra-blessed", "pushed v2",
                 "pushed as version 2; promoted", "3987", 'id="drift-chart"', 'id="roc-chart"',
                 "baseline v1", "0.8216", "predicted 1", "17.4000", "plan &lt;b&gt;",
                 "<b>Judged against:</b> serving version 1",
                 '<a href="validate-data/anomalies_report">'):
        assert text in page, text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # self-contained


def test_report_of_a_failed_run_says_which_task_and_why(workdir):
    run_dir = workdir / "pipeline_root" / f"{PIPELINE}-2026-12-03-10-00-00-000001"
    _task(run_dir, "select-span", {"span": 3.0, "spans_read": [3.0]})
    (run_dir / "ingest").mkdir()
    (run_dir / "ingest" / task_exit.FAILURE_FILE).write_text("label column 'churned' has 50 "
                                                             "missing values\n")
    result = CliRunner().invoke(main, ["report", str(workdir), "-o", str(workdir / "r.html")])
    assert result.exit_code == 0, result.output  # the latest run
    page = (workdir / "r.html").read_text()
    assert "ingest failed: label column &#x27;churned&#x27; has 50 missing values" in page
    assert "No evaluation: the run ended before it." in page
    result = CliRunner().invoke(main, ["report", str(workdir / "pipeline_root")])
    assert result.exit_code == 1 and "is neither a run's folder nor a workdir" in result.output


def test_report_of_a_blocked_run_says_what_was_skipped_and_why(workdir):
    """Data validation blocked: the local pipeline's later tasks skipped their work."""
    (finished,) = (workdir / "pipeline_root").iterdir()
    run_dir = workdir / "pipeline_root" / f"{PIPELINE}-2026-12-04-10-00-00-000001"
    shutil.copytree(finished, run_dir)
    why = "data validation blocked: 1 blocking anomaly: plan (Drift)"
    for task in ("validate-data", "evaluate", "infra-validate", "rollout"):
        shutil.rmtree(run_dir / task)
    _task(run_dir, "validate-data", {"Output": False}, {
        "anomalies": {"anomaly_count": 1.0, "blocking_count": 1.0}})
    _task(run_dir, "evaluate", artifacts={"blessing": {
        "blessed": None, "skipped": why, "reason": f"skipped: {why}", "baseline_version": 1}})
    _task(run_dir, "infra-validate", artifacts={"infra_blessing": {
        "infra_blessed": None, "skipped": why, "reason": f"skipped: {why}"}})
    _task(run_dir, "rollout", artifacts={"pushed_model": {
        "pushed": False, "reason": "data validation did not pass (1 blocking anomalies)"}})
    result = CliRunner().invoke(main, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report.html").read_text()
    for text in ("✗ data valid", "– blessed", "data validation did not pass",
                 f"Not evaluated: {why}.", f"Skipped: {why}.",
                 "<b>Judged against:</b> serving version 1"):
        assert text in page, text


def _in_browser(page, tmp_path) -> str:
    """The page as headless chromium rendered it (its DOM after the load event), checked free of
    script errors."""
    done = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
         "--v=0", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Uncaught" not in done.stderr and "CONSOLE" not in done.stderr
    return done.stdout


needs_browser = pytest.mark.skipif(
    BROWSER is None, reason="needs chromium (Debian: apt-get install chromium)")


@needs_browser
def test_report_renders_in_a_headless_browser_with_its_charts_and_no_script_error(workdir,
                                                                                 tmp_path):
    CliRunner().invoke(main, ["report", str(workdir), "-o", str(tmp_path / "r.html")])
    # The page's script ran to its end after layout, and both charts had a size.
    assert 'data-charts-rendered="2"' in _in_browser(tmp_path / "r.html", tmp_path)


@needs_browser
@pytest.mark.parametrize("run", ["pushed_run", "blocked_run"])
def test_the_pipelines_page_renders_in_a_headless_browser(run, tmp_path):
    """run_report's HTML artifact, what the KFP UI shows, from hand-built task artifacts."""
    page = artifacts.page(tmp_path)
    run_report.python_func(report=page, **getattr(artifacts, run)(tmp_path / "in"),
                           **artifacts.NO_SINKS)
    shown = _in_browser(tmp_path / "report.html", tmp_path)
    # Both charts of a pushed run (drift, ROC); the drift chart of a run blocked before training.
    assert f'data-charts-rendered="{2 if run == "pushed_run" else 1}"' in shown
    assert "Outcome:" in shown
