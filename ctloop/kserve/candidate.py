"""Infra validation's short-lived InferenceService: one run's candidate, served alone.

``candidate_name`` names it per run, ``candidate_service`` builds its manifest with the serving
settings (``ServiceConfig``) it would serve with, but for recording: the candidate's load test is
synthetic traffic, never monitored (``ctloop.kserve.recording``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ctloop.errors import ConfigError
from ctloop.kserve.manifests import (
    API_VERSION,
    FIELD_MANAGER,
    KIND,
    MANAGED_BY_LABEL,
    MODE_ANNOTATION,
    NAME_LABEL,
    ROLE_LABEL,
    ServiceConfig,
    predictor,
)

CANDIDATE_ROLE = "infra-validation"
_TOKEN = re.compile(r"^[a-z0-9]{1,8}$")


def candidate_name(name: str, token: str) -> str:
    """The name of one run's short-lived infra-validation InferenceService of model ``name``:
    ``<name>-infra-<token>``, the model's name shortened so that it stays a valid serving name
    (``ServiceConfig``). Unique per run: two runs of one model never probe, replace or delete
    each other's candidate, and a run never waits on a predecessor's that is still going.

    Raises:
        ConfigError: ``token`` is not 1-8 lowercase letters or digits.
    """
    if not _TOKEN.match(token or ""):
        raise ConfigError(f"candidate token {token!r} is invalid: use 1-8 lowercase letters or "
                          "digits, e.g. a few hex digits of a UUID")
    keep = 45 - len(f"-infra-{token}")  # ServiceConfig's limit for a name that canaries
    return f"{name[:keep].rstrip('-')}-infra-{token}"


def candidate_service(config: ServiceConfig, artifact_uri: str, token: str) -> dict[str, Any]:
    """A short-lived InferenceService serving the candidate alone, for infra validation.

    Named ``candidate_name(config.name, token)`` (also its model name in request paths), beside
    the serving one and never taking its traffic; ``config``'s mode, runtime, resources and
    credentials, so it is tested as it would serve, but recording nothing: its load test is not
    traffic the monitor should see.

    Raises:
        ConfigError: A bad token or artifact URI.
    """
    candidate = dataclasses.replace(config, name=candidate_name(config.name, token),
                                    record_uri=None)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": candidate.name,
            "namespace": candidate.namespace,
            "labels": {MANAGED_BY_LABEL: FIELD_MANAGER, NAME_LABEL: config.name,
                       ROLE_LABEL: CANDIDATE_ROLE},
            "annotations": {MODE_ANNOTATION: candidate.mode.value},
        },
        "spec": {"predictor": predictor(candidate, artifact_uri)},
    }
