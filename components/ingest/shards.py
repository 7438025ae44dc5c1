"""A split written as a folder of Parquet files (``part-00000.parquet``, ...), in row order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

PART = "part-{:05d}.parquet"
PART_GLOB = "part-*.parquet"


class Shards:
    """Writes a split as ``PART`` files of at most ``shard_rows`` rows each, in row order."""

    def __init__(self, folder: str, schema, shard_rows: int):
        self.folder, self.schema, self.shard_rows = Path(folder), schema, shard_rows
        self.rows = 0
        self._writer, self._in_part, self._parts = None, 0, 0

    def write(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False)
        while table.num_rows:
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.folder / PART.format(self._parts),
                                                self.schema)
                self._parts, self._in_part = self._parts + 1, 0
            taken = table.slice(0, self.shard_rows - self._in_part)
            self._writer.write_table(taken)
            self._in_part += taken.num_rows
            self.rows += taken.num_rows
            table = table.slice(taken.num_rows)
            if self._in_part == self.shard_rows:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def prepare_output(folder: str) -> None:
    """An empty folder at ``folder``: a split written before (a file, or parts) is removed."""
    path = Path(folder)
    if path.is_file():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    for part in path.glob(PART_GLOB):
        part.unlink()
