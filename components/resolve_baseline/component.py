"""KFP components: the baseline a run is judged against, resolved from the registry once per run
(``resolve_baseline``, never cached) and loaded into the run's artifacts (``load_baseline``,
cached under the fingerprint the resolver found)."""

from typing import NamedTuple, Optional

from kfp import dsl
from kfp.dsl import Artifact, Model, Output

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def resolve_baseline(
    registry_uri: str,
    model_name: str,
    span: int,
    s3_endpoint_url: Optional[str] = None,
) -> NamedTuple("ResolveBaselineOutputs",
                [("version", int), ("statistics_span", int), ("fingerprint", str)]):
    """Finds the baseline of this run in the registry: the serving version (its model and
    schema) and the stored statistics drift is measured against, and fingerprints them.

    Run it uncached (``set_caching_options(False)``): it must look at the registry on every run.
    Its ``fingerprint`` feeds ``load_baseline``, whose KFP cache key then changes exactly when
    the baseline does. Nothing else in the pipeline reads the registry before rollout.

    Args:
        registry_uri: The model registry root: a local folder, or ``s3://BUCKET/PREFIX``.
        model_name: The model's name in the registry.
        span: The run's span (select_span's ``span``): drift is measured against the stored
            statistics of the latest span before it (none for 0, data without spans).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None: boto3's).

    Returns:
        version: The serving version (0: none serves, a cold start).
        statistics_span: The span whose statistics drift is measured against (0: none).
        fingerprint: SHA-256 over the version's files and the statistics' span and bytes.
    """
    from collections import namedtuple

    from ctloop.components.resolve_baseline import logic
    from ctloop.local import task_exit

    task_exit.install()

    # ct_pipeline passes "" for "boto3's default": kfp 2.13's local runner cannot pass None.
    found = logic.resolve(registry_uri, model_name, span, s3_endpoint_url or None)
    print(f"baseline: {found.describe()} (fingerprint {found.fingerprint[:12]})")
    outputs = namedtuple("ResolveBaselineOutputs", ["version", "statistics_span", "fingerprint"])
    return outputs(found.number or 0, found.statistics_span or 0, found.fingerprint)


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def load_baseline(
    registry_uri: str,
    model_name: str,
    span: int,
    fingerprint: str,
    model: Output[Model],
    schema: Output[Artifact],
    statistics: Output[Artifact],
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
    """
    from ctloop.components.resolve_baseline import logic
    from ctloop.local import task_exit

    task_exit.install()

    found = logic.resolve(registry_uri, model_name, span, s3_endpoint_url or None)
    metadata = logic.load(found, fingerprint, logic.OutputPaths(
        model_dir=model.path, schema_dir=schema.path, statistics_dir=statistics.path))
    model.metadata.update(metadata)
    schema.metadata["version"] = found.number
    statistics.metadata["span"] = found.statistics_span
    print(f"baseline: {found.describe()}")
