"""The calibrated drift and skew measures on their own: bins, distance, significance, the
false-alarm rate they promise, and the changes they must catch (no TFDV, no files)."""

import numpy as np
import pandas as pd
import pytest
from tensorflow_metadata.proto.v0 import statistics_pb2

from ctloop import drift
from ctloop.errors import ConfigError


def _judged(reference: pd.Series, current: pd.Series | None, kind=drift.NUMERIC, rows=None,
            tests: int = 1, threshold: float = 0.03, rate: float = 0.01) -> drift.Measurement:
    """One feature measured and judged as one of ``tests`` features of a validation."""
    profile = drift.profile(reference, kind)
    found = drift.measure("x", drift.DRIFT, profile, current,
                          len(current) if current is not None else rows, threshold)
    others = [drift.Measurement(f"y{i}", drift.SKEW, 0.0, threshold) for i in range(tests - 1)]
    return next(m for m in drift.judge([found, *others], rate) if m.feature == "x")


def test_deciles_of_a_heavy_tailed_column_give_small_distances_between_random_halves():
    # The case TFDV's equal-width histograms get wrong (0.3-0.7 between two halves): a
    # lognormal "trip_miles"-like column.
    rng = np.random.default_rng(7)
    values = pd.Series(np.exp(rng.normal(1.0, 1.5, 20_000)))
    measured = _judged(values[:10_000], values[10_000:])
    assert measured.value < 0.002
    assert not measured.breached and measured.p_value > 0.01


def test_a_mostly_zero_column_keeps_its_point_mass_in_one_bin():
    values = pd.Series([0.0] * 700 + list(np.arange(1, 301, dtype=float)))
    profile = drift.profile(values, drift.NUMERIC)
    assert profile.labels[0] == "(-inf, 0]" and profile.counts[0] == 700
    assert sum(profile.counts) == 1000 and profile.counts[-1] == 0


def test_false_alarm_rate_holds_at_every_sample_size():
    """Validations of unchanged data (5 features, random halves) alarm at most at the stated
    rate: 200 validations at a 5 % rate expect 10 alarms; more than 20 would be a broken test."""
    rng = np.random.default_rng(11)
    for rows in (60, 600, 6000):
        alarms = 0
        for _ in range(200):
            found = []
            for name, values in (
                ("gamma", pd.Series(rng.gamma(0.5, 3.0, rows))),
                ("counts", pd.Series(rng.poisson(1.2, rows).astype(float))),
                ("normal", pd.Series(np.where(rng.random(rows) < 0.1, np.nan,
                                              rng.normal(size=rows)))),
                ("plan", pd.Series(rng.choice(["a", "b", "c", "d"], rows, p=[.5, .3, .15, .05]))),
                ("city", pd.Series(rng.zipf(1.8, rows).astype(str))),
            ):
                kind = drift.CATEGORICAL if values.dtype == object else drift.NUMERIC
                half = rows // 2
                found.append(drift.measure(name, drift.DRIFT, drift.profile(values[:half], kind),
                                           values[half:], rows - half, 0.03))
            alarms += any(m.breached or m.too_new for m in drift.judge(found, 0.05))
        assert alarms <= 20, (rows, alarms)


def test_a_shift_of_one_standard_deviation_blocks_even_on_a_few_hundred_rows():
    rng = np.random.default_rng(3)
    before, after = pd.Series(rng.normal(size=150)), pd.Series(rng.normal(size=150) + 1.0)
    measured = _judged(before, after, tests=20)
    assert measured.breached
    assert 0.08 < measured.value < 0.3
    assert measured.p_value < measured.alpha


def test_a_tiny_change_on_many_rows_is_significant_but_below_the_effect_size():
    rng = np.random.default_rng(5)
    before = pd.Series(rng.normal(size=200_000))
    after = pd.Series(rng.normal(size=200_000) + 0.1)  # 0.002 JSD: real, but too small to block
    measured = _judged(before, after)
    assert measured.significant and not measured.breached
    assert measured.status == "ok"


@pytest.mark.parametrize(
    ("change", "moved_bin"),
    [
        (lambda s: s * 100, "inf]"),  # a unit change: half the rows beyond the top decile
        (lambda s: s.mask(np.random.default_rng(1).random(len(s)) < 0.3), "(missing)"),
        (lambda s: None, "(missing)"),  # the column is gone
    ],
)
def test_unit_change_extra_nulls_and_a_dropped_column_block(change, moved_bin):
    rng = np.random.default_rng(2)
    before, after = pd.Series(rng.normal(size=3000)), pd.Series(rng.normal(size=3000))
    measured = _judged(before, change(after), rows=3000, tests=20)
    assert measured.breached and measured.value > 0.1
    assert moved_bin in measured.moved.split(":")[0]


def test_numbers_beyond_the_reference_range_block_only_beyond_chance():
    rng = np.random.default_rng(4)
    before = pd.Series(rng.normal(size=2000))
    # Of two samples of one distribution, a few values beyond the other's extremes are normal.
    calm = _judged(before, pd.Series(rng.normal(size=2000)), tests=20)
    assert not calm.too_new and calm.new_share < 0.01
    corrupt = rng.normal(size=2000)
    corrupt[:100] = -1.0e6  # 5 % of rows out of range: a sentinel or a broken parser
    measured = _judged(before, pd.Series(corrupt), tests=20)
    assert measured.too_new and measured.new_share == pytest.approx(0.05)
    assert measured.status == "breached"


def test_rare_new_categories_pass_renamed_ones_block():
    rng = np.random.default_rng(9)
    companies = [f"company {i}" for i in range(60)]
    weights = np.array([1 / (i + 1) for i in range(60)])
    weights /= weights.sum()
    before = pd.Series(rng.choice(companies, 5000, p=weights))
    after = pd.Series(rng.choice(companies, 5000, p=weights))
    after[:10] = "a new company"  # 0.2 % of trips: normal from one span to the next
    calm = _judged(before, after, drift.CATEGORICAL, tests=20)
    assert not calm.breached and not calm.too_new and 0 < calm.new_share < 0.01
    renamed = after.str.upper()
    measured = _judged(before, renamed, drift.CATEGORICAL, tests=20)
    assert measured.breached and measured.new_share == 1.0
    assert measured.moved.startswith(drift.OTHER)


def test_an_id_like_categorical_tracks_no_new_values():
    ids = pd.Series([f"id-{i}" for i in range(drift.MAX_KNOWN + 1)])
    measured = _judged(ids, pd.Series([f"id-{i}" for i in range(5000, 5500)]), drift.CATEGORICAL)
    assert measured.new_share is None and not measured.too_new


@pytest.mark.parametrize("table", [
    (3, 1, 1, 3), (1, 0, 0, 1), (0, 10_000, 5, 9_995), (12, 988, 30, 970),
    (300, 700_000, 450, 699_550), (65_391, 79_182, 252_136, 311_636), (0, 7, 9, 0)])
def test_fishers_exact_test_is_scipys(table):
    from scipy import stats

    a, b, c, d = table
    expected = stats.fisher_exact([[a, b], [c, d]])[1]
    assert drift.fisher_exact(*table) == pytest.approx(expected, rel=1e-6)


def test_profiles_travel_in_the_statistics_proto():
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    feature = stats.datasets.add().features.add()
    feature.path.step.append("income")
    profile = drift.profile(pd.Series([1.0, 2.0, np.nan, 4.0, 8.0]), drift.NUMERIC)
    drift.write_profiles(stats, {"income": profile})
    drift.write_profiles(stats, {"income": profile})  # replaces, does not append
    assert len(feature.custom_stats) == 1
    restored = statistics_pb2.DatasetFeatureStatisticsList.FromString(stats.SerializeToString())
    assert drift.read_profiles(restored) == {"income": profile}


def test_thresholds_out_of_range_are_one_line_errors():
    with pytest.raises(ConfigError, match=r"drift threshold 0.0 is out of range"):
        drift.Thresholds(drift=0.0)
    with pytest.raises(ConfigError, match=r"skew threshold 2 is out of range"):
        drift.Thresholds(skew=2)
    with pytest.raises(ConfigError, match=r"false_alarm_rate 1.0 is out of range"):
        drift.Thresholds(false_alarm_rate=1.0)


def test_categories_are_counted_by_their_text_whatever_the_column_holds():
    mixed = pd.Series([1, "1", None, "a", "a", 2.5, np.nan], dtype=object)
    assert drift.text_counts(mixed).to_dict() == {"1": 2, "a": 2, "2.5": 1}
    # Dictionary-encoded text (how validate_data reads a column): unused categories drop out.
    coded = pd.Series(pd.Categorical(["b", None, "b", "c"], categories=["a", "b", "c"]))
    assert drift.text_counts(coded).to_dict() == {"b": 2, "c": 1}
    reference = drift.profile(pd.Series(["b", "b", "c", None]), drift.CATEGORICAL)
    assert reference.values == ("b", "c") and reference.counts == (2, 1, 0, 1)
    # The same rows, as text, as a categorical, and one absent value: the same bins.
    for values in (pd.Series(["c", "b", "z", None, None]),
                   pd.Series(pd.Categorical(["c", "b", "z", None, None]))):
        assert drift.count(reference, values, 5).counts == (1, 1, 1, 2)
    numbers = drift.profile(pd.Series([0.0, 1.0, 2.0, np.nan] * 5), drift.NUMERIC)
    assert sum(numbers.counts[:-1]) == 15 and numbers.counts[-1] == 5
    counted = drift.count(numbers, pd.Series([np.nan, 5.0, -1.0]), 3).counts
    assert counted[-1] == 1 and counted[0] == 1 and sum(counted[:-1]) == 2
