"""KFP component: read the files select_span chose into train/eval Parquet splits."""

from typing import List, Optional

from kfp import dsl
from kfp.dsl import Dataset, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def ingest(
    files: List[str],
    fingerprint: str,
    spans_read: List[int],
    label: str,
    train_data: Output[Dataset],
    eval_data: Output[Dataset],
    eval_percent: int,
    task: str,
    exclude: Optional[List[str]] = None,
    s3_endpoint_url: Optional[str] = None,
    positive_label: Optional[str] = None,
):
    """Reads select_span's files, checks their fingerprint, and splits train/eval by a row hash.

    Cacheable: its inputs name the files and their fingerprint, so its KFP cache key changes
    exactly when the data does.

    Args:
        files: The CSV/Parquet files to read (select_span's ``files``); local, gs:// or s3://.
        fingerprint: Their fingerprint (select_span's ``fingerprint``). If the files read do not
            match it, the task fails: the data changed while the run started; rerun.
        spans_read: The spans the files belong to (select_span's ``spans_read``).
        label: The label column.
        train_data: Output: the train split (Parquet, label encoded for the task: 0/1, the class
            index, or the number).
        eval_data: Output: the eval split (Parquet, label encoded the same way).
        eval_percent: Share of rows, in percent, that go to the eval split.
        task: ``binary``, ``multiclass`` or ``regression``. The label classes (sorted, the
            positive one last for binary) go to the splits' metadata ``label_classes``.
        exclude: Columns that are not features (IDs, timestamps, leaks).
        s3_endpoint_url: An S3-compatible endpoint (MinIO, SeaweedFS); None: boto3's default.
            Credentials come from boto3's standard chain only.
        positive_label: The label value that is the positive class (encoded 1), compared as
            text; None or empty: the second of the two values in sorted order. Binary only.
    """
    from ctloop.components.ingest import logic
    from ctloop.local import task_exit

    task_exit.install()

    result = logic.run(
        files, fingerprint, spans_read, label, exclude or [], eval_percent, train_data.path,
        eval_data.path,
        # ct_pipeline passes "" for "boto3's default": kfp 2.13's local runner cannot pass None.
        s3_endpoint_url or None,
        positive_label or None,
        task,
    )
    for artifact, rows in ((train_data, result.train_rows), (eval_data, result.eval_rows)):
        artifact.metadata.update(
            rows=rows, span=result.span, spans=result.spans, fingerprint=result.fingerprint,
            files=result.files, label_classes=result.label_classes, task=task,
        )
