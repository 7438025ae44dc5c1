"""evaluate logic with real TFMA: blessing on cold start, against a better or worse baseline."""

import pandas as pd
import pytest
import tensorflow_model_analysis as tfma

from conftest import EXCLUDE, LABEL
from ctloop.components.evaluate import logic
from ctloop.components.train import logic as train
from ctloop.errors import ConfigError


@pytest.fixture(scope="module")
def weak_model(prepared, tmp_path_factory):
    """A deliberately worse model: one weak feature, one epoch."""
    out = tmp_path_factory.mktemp("weak")
    keep = ["region"]
    drop = [f.name for f in prepared.features if f.name not in keep] + EXCLUDE
    train.run(str(prepared.train), str(prepared.eval), str(prepared.schema), LABEL, drop,
              train.Hyperparameters(epochs=1), str(out / "model"))
    return out / "model"


def _evaluate(model, prepared, tmp_path, baseline=None, **thresholds):
    return logic.run(str(model), str(prepared.eval), LABEL, str(baseline) if baseline else None,
                     logic.Thresholds(**thresholds), str(tmp_path / "tfma"),
                     slice_features=["contract"])


def test_cold_start_blesses_on_value_threshold(prepared, tmp_path):
    result = _evaluate(prepared.model_dir, prepared, tmp_path, min_auc=0.7)
    assert result.blessed, result.reason
    assert result.reason == "passed AUC >= 0.7"
    assert 0.72 < result.metrics["auc"] <= 1.0
    assert result.metrics["example_count"] == len(pd.read_parquet(prepared.eval))
    assert result.baseline_metrics == {}
    assert {"contract=month-to-month", "contract=two-year"} <= set(result.slices["candidate"])
    assert tfma.load_validation_result(str(tmp_path / "tfma")).validation_ok


def test_cold_start_below_value_threshold(prepared, tmp_path):
    result = _evaluate(prepared.model_dir, prepared, tmp_path, min_auc=0.99)
    assert not result.blessed
    assert result.reason.startswith("auc = 0.") and result.reason.endswith("fails >= 0.99")


def test_better_candidate_is_blessed_against_worse_baseline(prepared, weak_model, tmp_path):
    result = _evaluate(prepared.model_dir, prepared, tmp_path, baseline=weak_model)
    assert result.blessed, result.reason
    assert "serving model's AUC - 0.01" in result.reason
    assert result.metrics["auc"] > result.baseline_metrics["auc"] + 0.05
    report = logic.report_markdown(result, 3, 1)
    assert "**BLESSED**" in report and "serving version 3" in report and "## baseline" in report


def test_worse_candidate_is_not_blessed(prepared, weak_model, tmp_path):
    # min_auc 0 isolates the change threshold: only "worse than serving" can fail it.
    result = _evaluate(weak_model, prepared, tmp_path, baseline=prepared.model_dir, min_auc=0.0)
    assert not result.blessed
    assert "auc change vs serving model = -0." in result.reason
    assert "fails change >= -0.01" in result.reason


def test_no_thresholds_never_blesses(prepared, tmp_path):
    result = _evaluate(prepared.model_dir, prepared, tmp_path, min_auc=None, max_auc_decrease=None)
    assert not result.blessed
    assert result.reason.startswith("no threshold applies")


def test_thresholds_out_of_range():
    with pytest.raises(ConfigError, match="min_auc 1.5 is out of range"):
        logic.Thresholds(min_auc=1.5)
    with pytest.raises(ConfigError, match="max_auc_decrease -0.1 is out of range"):
        logic.Thresholds(max_auc_decrease=-0.1)
