"""KFP component: ingest the latest span into train/eval Parquet splits."""

from typing import List, NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Dataset, Output

from ctloop.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    data_uri: str,
    label: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    exclude: Optional[List[str]] = None,
    eval_percent: int = 20,
) -> NamedTuple("IngestOutputs", [("span", int), ("fingerprint", str)]):
    """Reads the latest span under a path and splits it train/eval by a stable row hash.

    Args:
        data_uri: A CSV/Parquet file, a folder of them, or a folder of ``span-<N>/`` folders
            (the highest N is used); local, gs:// or s3://.
        label: The binary label column.
        train_data: Output: the train split (Parquet, label encoded 0/1).
        eval_data: Output: the eval split (Parquet, label encoded 0/1).
        exclude: Columns that are not features (IDs, timestamps, leaks).
        eval_percent: Share of rows, in percent, that go to the eval split.

    Returns:
        span: The span number read (0 when the path has no span folders).
        fingerprint: SHA-256 over the span's file names, sizes and contents.
    """
    from collections import namedtuple

    from ctloop.components.ingest import logic

    result = logic.run(data_uri, label, exclude or [], eval_percent, train_data.path,
                       eval_data.path)
    for artifact, rows in ((train_data, result.train_rows), (eval_data, result.eval_rows)):
        artifact.metadata.update(
            rows=rows, span=result.span, fingerprint=result.fingerprint, files=result.files,
            label_classes=result.label_classes,
        )
    return namedtuple("IngestOutputs", ["span", "fingerprint"])(result.span, result.fingerprint)
