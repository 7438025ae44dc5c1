"""KFP component: the baseline ``resolve_baseline`` found, loaded into this run's artifacts;
cached under its fingerprint."""

from typing import Optional

from kfp import dsl
from kfp.dsl import Artifact, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def load_baseline(
    registry_uri: str,
    model_name: str,
    span: int,
    fingerprint: str,
    model: Output[Model],
    schema: Output[Artifact],
    statistics: Output[Artifact],
    baseline_stage: str,
    s3_endpoint_url: Optional[str] = None,
):
    """Copies the baseline ``resolve_baseline`` found into this run's artifacts, checking it is
    still what it fingerprinted.

    Cacheable: its inputs include the baseline's fingerprint, so its KFP cache key changes
    exactly when the baseline does, and while it does not, the tasks fed its artifacts keep
    theirs (KFP keys a cache entry by its input artifacts' ids).

    Args:
        registry_uri: The model registry root: a local folder, or ``s3://BUCKET/PREFIX``.
        model_name: The model's name in the registry.
        span: The run's span, as given to ``resolve_baseline``.
        fingerprint: ``resolve_baseline``'s fingerprint. If the registry no longer holds that
            baseline (a push or a rollback in between), the task fails: rerun.
        model: Output: the serving version's SavedModel (empty on a cold start); metadata
            ``version`` (None on a cold start), ``registry``, ``fingerprint``,
            ``statistics_span`` and ``record`` (the version's span, data fingerprint, metrics
            and baseline, from its run record).
        schema: Output: the serving version's ``schema.pbtxt`` (none on a cold start);
            metadata ``version``.
        statistics: Output: ``train.stats.tfrecord``, the statistics drift is measured against
            (none when no earlier span is stored); metadata ``span`` (None when none).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None: boto3's).
        baseline_stage: The stage whose version is the baseline, as given to
            ``resolve_baseline``.
    """
    from ctloop.local import task_exit
    from ctloop.registry import baseline

    task_exit.install()

    found = baseline.resolve(registry_uri, model_name, span, s3_endpoint_url or None,
                             baseline_stage)
    metadata = baseline.load(found, fingerprint, baseline.OutputPaths(
        model_dir=model.path, schema_dir=schema.path, statistics_dir=statistics.path))
    model.metadata.update(metadata)
    schema.metadata["version"] = found.number
    statistics.metadata["span"] = found.statistics_span
    print(f"baseline: {found.describe()}")
