"""KFP component: the baseline a run is judged against, found in the registry once per run (never
cached); ``load_baseline`` then loads it into the run's artifacts, cached under the fingerprint
this finds."""

from typing import NamedTuple, Optional

from kfp import dsl

from ctloop.kfp.images import PIPELINE_IMAGE


@dsl.component(base_image=PIPELINE_IMAGE, install_kfp_package=False)
def resolve_baseline(
    registry_uri: str,
    model_name: str,
    span: int,
    baseline_stage: str,
    s3_endpoint_url: Optional[str] = None,
) -> NamedTuple("ResolveBaselineOutputs",
                [("version", int), ("statistics_span", int), ("fingerprint", str)]):
    """Finds the baseline of this run in the registry: the version ``baseline_stage`` serves
    (its model and schema) and the stored statistics drift is measured against, and
    fingerprints them.

    Run it uncached (``set_caching_options(False)``): it must look at the registry on every run.
    Its ``fingerprint`` feeds ``load_baseline``, whose KFP cache key then changes exactly when
    the baseline does. Nothing else in the pipeline reads the registry before rollout.

    Args:
        registry_uri: The model registry root: a local folder, or ``s3://BUCKET/PREFIX``.
        model_name: The model's name in the registry.
        span: The run's span (select_span's ``span``): drift is measured against the stored
            statistics of the latest span before it (none for 0, data without spans).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (None: boto3's).
        baseline_stage: The stage whose serving version is the baseline: ``production`` (what
            serves users) or ``staging`` (the version awaiting approval).

    Returns:
        version: The stage's serving version (0: none serves, a cold start).
        statistics_span: The span whose statistics drift is measured against (0: none).
        fingerprint: SHA-256 over the version's number and run record and the statistics'
            span and bytes.
    """
    from collections import namedtuple

    from ctloop.local import task_exit
    from ctloop.registry import baseline

    task_exit.install()

    # ct_pipeline passes "" for "boto3's default": kfp 2.13's local runner cannot pass None.
    found = baseline.resolve(registry_uri, model_name, span, s3_endpoint_url or None,
                             baseline_stage)
    print(f"baseline: {found.describe()} (fingerprint {found.fingerprint[:12]})")
    outputs = namedtuple("ResolveBaselineOutputs", ["version", "statistics_span", "fingerprint"])
    return outputs(found.number or 0, found.statistics_span or 0, found.fingerprint)
