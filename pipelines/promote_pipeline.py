"""The approval pipeline: one task that promotes the version staging holds to production.

    promote

A person starts a run of ``ctloop-promote`` from the KFP UI (or ``ctloop submit``), filling in
the version, their name and the reason: that run is the approval, kept by KFP, and the decision
is recorded on the version in the registry. The registry refuses it, and the run fails with one
line, unless staging holds the version, it was blessed, and production serves an older one.
``ctloop promote`` does the same from a terminal.
"""

from kfp import dsl, kubernetes

from ctloop.components.promote.component import promote
from ctloop.settings import MODEL_NAME

PIPELINE_NAME = "ctloop-promote"
# The components the pipeline is made of (compiled one by one too).
COMPONENTS = (promote,)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Approval: promote the version staging holds to production, recording who "
    "approved it and why on the version.",
)
def promote_pipeline(
    version: int,
    approved_by: str,
    reason: str,
    registry_uri: str,
    model_name: str = MODEL_NAME,
    s3_endpoint_url: str = "",
    storage_secret: str = "mlpipeline-minio-artifact",
):
    """One approval.

    Args:
        version: The staged version to promote.
        approved_by: Who approves (recorded on the version).
        reason: Why (recorded on the version).
        registry_uri: The registry the CT pipeline pushes to (``s3://``).
        model_name: The registered model name.
        s3_endpoint_url: S3-compatible endpoint of the registry (``""``: boto3's).
        storage_secret: The Kubernetes Secret (keys ``accesskey``, ``secretkey``) the task gets
            as boto3's standard variables, as the CT pipeline's tasks do.
    """
    promoted = promote(model_name=model_name, version=version, approved_by=approved_by,
                       reason=reason, registry_uri=registry_uri,
                       s3_endpoint_url=s3_endpoint_url).set_caching_options(False)
    kubernetes.use_secret_as_env(promoted, secret_name=storage_secret, secret_key_to_env={
        "accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"})
