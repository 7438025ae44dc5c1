"""The model registry: numbered versions, the serving pointer, the canary, per-span statistics.

``open_registry(uri, model_name)`` returns the local implementation (``ctloop.registry.local``)
for a folder and the object-store one (``ctloop.registry.s3``) for ``s3://``; both have the same
semantics. ``ctloop.registry.record`` is what a version was made from (code and environment).
"""

from ctloop.registry.local import (
    ANY_SERVING,
    MODEL_DIR,
    POINTER_FILE,
    RECORD_FILE,
    SCHEMA_FILE,
    STATS_SUFFIX,
    Registry,
    Version,
    open_registry,
    stale_baseline,
    validate_model_name,
)

__all__ = [
    "ANY_SERVING", "MODEL_DIR", "POINTER_FILE", "RECORD_FILE", "SCHEMA_FILE", "STATS_SUFFIX",
    "Registry", "Version", "open_registry", "stale_baseline", "validate_model_name",
]
