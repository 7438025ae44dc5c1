"""The model registry: numbered versions, per stage (staging, production) the serving pointer
with its history, a canary and a shadow, decisions on versions, per-span statistics.

``Registry`` is the protocol (``ctloop.registry.base``, with the layout, the stages and
``Version``; its pointer operations are ``ctloop.registry.pointers``');
``LocalRegistry`` (``ctloop.registry.local``) keeps it in a folder, ``S3Registry``
(``ctloop.registry.s3``) in an S3 bucket, with the same semantics. ``open_registry(uri,
model_name)`` opens the one a URI names. ``ctloop.registry.record`` is what a version was made
from (code and environment); ``ctloop.registry.stages`` promotes a staged version to production
on a person's approval, and rolls a stage back.
"""

from __future__ import annotations

from ctloop.errors import ConfigError
from ctloop.registry.base import (
    ANY_SERVING,
    CANARY_FILE,
    MODEL_DIR,
    POINTER_FILE,
    PRODUCTION,
    RECORD_FILE,
    SCHEMA_FILE,
    SHADOW_FILE,
    STAGES,
    STAGING,
    STAGING_FILE,
    STATS_SUFFIX,
    Registry,
    Version,
    check_stage,
    pointer_file,
    stale_baseline,
    validate_model_name,
)
from ctloop.registry.local import LocalRegistry
from ctloop.registry.s3 import S3Registry  # boto3 is imported when one is opened, not here


def open_registry(uri: str, model_name: str, s3_endpoint_url: str | None = None) -> Registry:
    """The registry at ``uri``: a local folder (``LocalRegistry``), or ``s3://BUCKET[/PREFIX]``
    (``S3Registry``, shared by the pods of a cluster; ``s3_endpoint_url`` for MinIO/SeaweedFS).

    Raises:
        ConfigError: Another scheme.
    """
    if uri.startswith("s3://"):
        return S3Registry(uri, model_name, s3_endpoint_url)
    if "://" in uri:
        raise ConfigError(f"registry URI {uri!r} is not supported: use a local folder or "
                          "s3://BUCKET/PREFIX (AWS S3, MinIO and SeaweedFS speak it)")
    return LocalRegistry(uri, model_name)


__all__ = [
    "ANY_SERVING", "CANARY_FILE", "MODEL_DIR", "POINTER_FILE", "PRODUCTION", "RECORD_FILE",
    "SCHEMA_FILE", "SHADOW_FILE", "STAGES", "STAGING", "STAGING_FILE", "STATS_SUFFIX",
    "LocalRegistry", "Registry", "S3Registry", "Version", "check_stage", "open_registry",
    "pointer_file", "stale_baseline", "validate_model_name",
]
