"""The real-data suite's CI subset: the decisions the pipeline makes on public data sets.

One small data set per task (``realdata.datasets.CI_SUBSET``). ``make realdata`` runs the whole
catalogue with more repetitions and prints the tables (README, "Decisions on real data").
"""

import pytest

from realdata import corrupt, datasets, suite

REPS = 3


@pytest.mark.parametrize("name", datasets.CI_SUBSET)
def test_a_clean_second_span_passes_and_every_corruption_is_blocked_naming_its_feature(
        name, tmp_path):
    entry = datasets.get(name)
    clean = suite.false_alarms(entry, REPS, tmp_path)
    assert clean["cold_valid"] == REPS, clean["fired"]
    assert clean["second_valid"] == REPS, clean["fired"]
    found = suite.corruptions(entry, 1, tmp_path)
    assert set(found) == set(corrupt.CORRUPTIONS)
    for kind, item in found.items():
        assert item["blocked"] == item["named"] == 1, (kind, item["missed"])


@pytest.mark.local
@pytest.mark.parametrize("name", datasets.CI_SUBSET)
def test_cold_start_deploys_with_defaults_and_a_corrupted_span_deploys_nothing(
        name, serving_python, tmp_path):
    """`ctloop run --local` with only --data, --label, --task and --exclude."""
    ran = suite.pipeline(datasets.get(name), tmp_path, serving_python)
    cold, bad = ran["cold_start"], ran["corrupted"]
    assert cold["exit_code"] == 0, cold["error"]
    assert cold["data_valid"] and cold["blessed"] and cold["pushed"], cold["blessing_reason"]
    assert "beats no-skill" in cold["blessing_reason"]
    assert bad["exit_code"] == 0, bad["error"]
    assert not bad["data_valid"] and not bad["pushed"], bad["description"]
    assert bad["serving_before"] == bad["serving_after"] == 1
