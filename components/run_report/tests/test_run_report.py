"""run_report: the run's page from its tasks' artifacts, for a pushed run and a blocked one."""

import re

from ctloop.components.run_report.component import run_report
from ctloop.components.run_report.tests import artifacts


def _run(inputs: dict, tmp_path):
    report = artifacts.page(tmp_path)
    run_report.python_func(report=report, **inputs, **artifacts.NO_SINKS)
    return (tmp_path / "report.html").read_text(), report.metadata


def _self_contained(page: str) -> bool:
    return not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<link" not in page


def test_page_of_a_pushed_run_holds_the_decisions_charts_and_reports(tmp_path):
    page, meta = _run(artifacts.pushed_run(tmp_path / "in"), tmp_path)
    assert meta == {"data_valid": True, "blessed": True, "infra_blessed": True,
                    "pushed_version": 2, "baseline": "v1",
                    "outcome": "pushed as version 2; promoted"}
    for text in ("ctloop run, span 2", "✓ data valid", "✓ blessed", "✓ infra-blessed",
                 "pushed v2", "<b>Outcome:</b> pushed as version 2; promoted",
                 "<b>Judged against:</b> serving version 1", "<b>Blessing:</b> passed",
                 "<b>Infra:</b> served", "3987", "1013", 'id="drift-chart"', "plan &lt;b&gt;",
                 'id="roc-chart"', "predicted 1", "baseline v1", "0.8216", "17.4000",
                 "| slice | candidate |", "# Rollout", "In the KFP UI"):
        assert text in page, text
    assert _self_contained(page)


def test_page_of_a_blocked_run_says_which_gate_stopped_it_and_why(tmp_path):
    """Compiled for a cluster, nothing after the failed gate ran: those inputs are None."""
    page, meta = _run(artifacts.blocked_run(tmp_path / "in"), tmp_path)
    outcome = f"not pushed: data validation blocked ({artifacts.WHY})"
    assert meta == {"data_valid": False, "blessed": None, "infra_blessed": None,
                    "pushed_version": None, "baseline": "v1", "outcome": outcome}
    for text in ("ctloop run, span 3", "✗ data valid", "– blessed", "– infra-blessed",
                 "✗ pushed", f"<b>Outcome:</b> {outcome}",
                 f"No evaluation: data validation blocked the run ({artifacts.WHY}).",
                 "Not evaluated: data validation blocked the run.",
                 'id="drift-chart"', "0.410", "plan (Drift)", "| plan | Drift | block |",
                 "<b>Judged against:</b> serving version 1"):
        assert text in page, text
    assert 'id="roc-chart"' not in page and _self_contained(page)


def test_page_of_a_run_stopped_at_blessing_or_infra_validation(tmp_path):
    inputs = artifacts.pushed_run(tmp_path / "in")
    for name in ("pushed_model", "rollout_report"):
        del inputs[name]
    inputs["infra_blessing"].metadata.update(infra_blessed=False, reason="p99 412 ms > 250 ms")
    page, meta = _run(inputs, tmp_path)
    assert meta["outcome"] == "not pushed: not infra-blessed (p99 412 ms > 250 ms)"
    assert "✗ infra-blessed" in page and "not run: the model is not infra-blessed" in page
    for name in ("infra_blessing", "infra_report"):
        del inputs[name]
    inputs["blessing"].metadata.update(blessed=False, reason="AUC 0.61 < 0.7")
    page, meta = _run(inputs, tmp_path)
    assert meta["outcome"] == "not pushed: not blessed (AUC 0.61 < 0.7)"
    assert "✗ blessed" in page and "Not run: the model is not blessed." in page


def test_page_of_a_tuned_run_shows_the_search_and_an_untuned_one_does_not(tmp_path):
    from kfp.dsl import Artifact

    from ctloop.tuning import TRIALS_PAGE

    inputs = artifacts.pushed_run(tmp_path / "in")
    untuned, _ = _run(inputs, tmp_path)
    assert "Hyperparameter search" not in untuned
    best = Artifact(uri=str(tmp_path / "best"))
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / TRIALS_PAGE).write_text('<svg id="trials"><circle/></svg>')
    best.metadata.update(tuned=True, trial=2.0, stopped="all 3 trials ran",
                         verdict="trial 2 beats the configured hyperparameters: eval_auc 0.83 "
                                 "vs 0.81 (trial 0)",
                         hyperparameters={"learning_rate": 0.004, "hidden_units": [16.0]})
    page, _ = _run({**inputs, "tuning": best}, tmp_path)
    for text in ("<h2>Hyperparameter search</h2>", "trial 2 beats the configured",
                 "all 3 trials ran", "learning_rate", "[16.0]", '<svg id="trials">'):
        assert text in page, text
    assert _self_contained(page)
