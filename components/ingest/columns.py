"""Column types over a whole span read in batches: what a batch alone cannot tell (an integer
column with a missing value in another batch, text after a batch of empty cells)."""

from __future__ import annotations

import dataclasses

import pandas as pd

from ctloop.errors import DataError


@dataclasses.dataclass
class Column:
    """What the first pass saw of a column, over every batch of every file."""

    dtypes: set = dataclasses.field(default_factory=set)
    text: bool = False  # some value is a string
    arrow_types: set = dataclasses.field(default_factory=set)  # of its object batches

    def add(self, uri: str, name: str, values: pd.Series) -> None:
        self.dtypes.add(values.dtype)
        if not pd.api.types.is_object_dtype(values.dtype):
            return
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind == "empty":
            return
        if kind == "string":
            self.text = True
            return
        self.text = self.text or kind.startswith("mixed")
        import pyarrow as pa

        try:
            self.arrow_types.add(pa.array(values, from_pandas=True).type)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise DataError(
                f"column {name!r} of data file {uri} mixes types ({kind} values); give it one "
                "type"
            ) from exc


@dataclasses.dataclass(frozen=True)
class Layout:
    """The columns' types over the whole data: how to read, cast and hash each batch.

    ``as_text``: CSV columns holding text, parsed as text everywhere (as a whole-file read parses
    a column with any text). ``dtypes``: the type of every other column in the whole data (a
    batch with an integer column whose missing values are in another batch is cast to float).
    A row's hash does not depend on the other rows once its columns have these types: pandas
    hashes an object column value by value (nulls alike), and a number column by its bytes.
    """

    columns: list[str]
    as_text: frozenset[str]
    dtypes: dict[str, object]
    arrow_types: dict[str, object]


def layout(columns: list[str], seen: dict[str, Column], csv: bool) -> Layout:
    import pyarrow as pa
    from pandas.core.dtypes.cast import find_common_type

    as_text, dtypes, arrow_types = set(), {}, {}
    for name in columns:
        column = seen[name]
        if csv and column.text:
            as_text.add(name)
            arrow_types[name] = pa.string()
            continue
        if not column.dtypes:
            continue
        if all(isinstance(d, pd.CategoricalDtype) for d in column.dtypes):
            continue  # hashed by value whatever a batch's categories
        dtype = find_common_type(list(column.dtypes))
        dtypes[name] = dtype
        if pd.api.types.is_object_dtype(dtype):
            found = column.arrow_types | ({pa.string()} if column.text else set())
            if len(found) > 1:
                raise DataError(
                    f"column {name!r} holds values of types {sorted(map(str, found))} in "
                    "different rows or files; give it one type"
                )
            arrow_types[name] = found.pop() if found else pa.null()
    return Layout(columns, frozenset(as_text), dtypes, arrow_types)


def cast(frame: pd.DataFrame, layout: Layout) -> pd.DataFrame:
    changed = {name: dtype for name, dtype in layout.dtypes.items()
               if name in frame.columns and frame[name].dtype != dtype}
    return frame.astype(changed) if changed else frame
