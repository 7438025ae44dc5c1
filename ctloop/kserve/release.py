"""Blue-green and shadow on a cluster, with KServe's and Istio's own mechanisms: pure functions
over manifests and status dicts, no client (the live paths are e2e-only, as the canary's).

Blue-green (KServe's canary rollout at 0 %, then 100 %):

- ``green_service``: the new version as the InferenceService's latest revision taking no
  traffic. Knative mode: ``spec.predictor.canaryTrafficPercent: 0`` with the annotation
  ``serving.kserve.io/enable-tag-routing: "true"``, so the green is reachable on its own at its
  ``latest-`` tagged URL (``status.components.predictor.traffic[]`` entry tagged ``latest``;
  the serving revision is tagged ``prev``) while the previously rolled out revision keeps 100 %.
  Standard mode: a ``spec.canary[]`` entry with ``trafficPercent: 0``: its own Deployment and
  Service ``<isvc>-v<version>-predictor``, checked there.
- ``switched``: all traffic to the green at once (``manifests.promoted``: the canary percent or
  entry goes).
- ``rolled_back``: Knative: ``canaryTrafficPercent: 0`` on the switched service sends all traffic
  back to ``status.components.predictor.previousRolledoutRevision``, which KServe keeps: no new
  revision, no model download (KServe's documented rollback). Standard mode has no previous
  revision: a rollback re-applies the previous version's manifest (a rolling update).

The status fields are KServe's ``ComponentStatusSpec`` (``latestRolledoutRevision``,
``previousRolledoutRevision``, ``traffic``): pkg/apis/serving/v1beta1/inference_service_status.go
in kserve/kserve; the canary-at-0 and tag-routing behaviour is its serverless canary rollout
(docs: "Canary Rollout", kserve.github.io/website, and the predictor reconciler
pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go).

Shadow (Istio request mirroring, ``networking.istio.io/v1beta1`` ``VirtualService``):

- ``shadow_service``: the candidate as its own InferenceService ``<name>-shadow`` (Standard
  mode: a plain Deployment and Service).
- ``shadow_virtual_service``: on the serving predictor's in-mesh host, every request routes to
  the serving predictor and a copy of ``percent`` % is sent to the candidate's predictor
  (``HTTPRoute.mirror``, ``HTTPRoute.mirrorPercentage.value``: istio/api
  networking/v1beta1/virtual_service.proto; istio.io "Mirroring" task). Envoy sends the copy
  fire-and-forget: the client never waits for, nor sees, the candidate's answer. Knative mode
  is excluded: Knative owns the VirtualServices of its hosts. The comparison of answers comes
  from both predictors' request records (``ctloop.kserve.recording``), joined by request id.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from ctloop.errors import ConfigError
from ctloop.kserve import manifests
from ctloop.kserve.manifests import Mode, ServiceConfig

ISTIO_API_VERSION = "networking.istio.io/v1beta1"
SHADOW_SUFFIX = "-shadow"
GREEN_TAG, SERVING_TAG = "latest", "prev"  # Knative tags KServe gives the two revisions


def green_service(config: ServiceConfig, version: int, artifact_uri: str,
                  stable: dict[str, Any]) -> dict[str, Any]:
    """The manifest with registry ``version`` loaded beside ``stable`` taking no traffic.

    Raises:
        ConfigError: As ``manifests.inference_service`` for a canary (no stable service, ...).
    """
    manifest = manifests.inference_service(config, version, artifact_uri, canary_percent=1,
                                           stable=stable)
    if config.mode is Mode.KNATIVE:
        manifest["spec"]["predictor"]["canaryTrafficPercent"] = 0
        manifest["metadata"]["annotations"][manifests.TAG_ROUTING_ANNOTATION] = "true"
    else:
        manifest["spec"]["canary"][0]["trafficPercent"] = 0
    return manifest


def switched(green: dict[str, Any]) -> dict[str, Any]:
    """The green takes all traffic at once; KServe keeps the revision that served before."""
    return manifests.promoted(green)


def rolled_back(switched_manifest: dict[str, Any]) -> dict[str, Any]:
    """Knative: all traffic back to the previously rolled out revision, still there.

    Raises:
        ConfigError: A Standard-mode manifest: re-apply the previous version's instead.
    """
    annotations = switched_manifest["metadata"].get("annotations") or {}
    if annotations.get(manifests.MODE_ANNOTATION) != Mode.KNATIVE.value:
        raise ConfigError(
            "a traffic rollback needs Knative mode (KServe keeps the previous revision there); "
            "in Standard mode re-apply the previous version's manifest")
    manifest = copy.deepcopy(switched_manifest)
    manifest["spec"]["predictor"]["canaryTrafficPercent"] = 0
    manifest["metadata"]["annotations"][manifests.TAG_ROUTING_ANNOTATION] = "true"
    return manifest


def tagged_url(status: dict[str, Any], tag: str = GREEN_TAG) -> str | None:
    """The URL of the revision tagged ``tag`` (``latest``: the green) in a Knative-mode
    InferenceService's ``status.components.predictor.traffic``; None until KServe reports it."""
    predictor = ((status.get("status") or {}).get("components") or {}).get("predictor") or {}
    return next((entry.get("url") for entry in predictor.get("traffic") or []
                 if entry.get("tag") == tag), None)


def previous_revision(status: dict[str, Any]) -> str | None:
    """The revision a Knative-mode rollback returns to
    (``status.components.predictor.previousRolledoutRevision``)."""
    predictor = ((status.get("status") or {}).get("components") or {}).get("predictor") or {}
    return predictor.get("previousRolledoutRevision")


def shadow_name(config: ServiceConfig) -> str:
    return f"{config.name}{SHADOW_SUFFIX}"


def shadow_service(config: ServiceConfig, version: int, artifact_uri: str) -> dict[str, Any]:
    """The candidate as its own Standard-mode InferenceService ``<name>-shadow``.

    Raises:
        ConfigError: Knative mode (see the module).
    """
    _standard_only(config)
    manifest = manifests.inference_service(
        dataclasses.replace(config, name=shadow_name(config)), version, artifact_uri)
    manifest["metadata"]["labels"][manifests.ROLE_LABEL] = "shadow"
    return manifest


def shadow_virtual_service(config: ServiceConfig, percent: float = 100.0,
                           cluster_domain: str = "cluster.local") -> dict[str, Any]:
    """The Istio VirtualService that mirrors ``percent`` % of the serving predictor's requests
    to the shadow's predictor (Standard mode: both are plain Services on port 80).

    Raises:
        ConfigError: Knative mode, or a percent outside (0, 100].
    """
    _standard_only(config)
    if isinstance(percent, bool) or not 0 < percent <= 100:
        raise ConfigError(f"mirror percent {percent!r} is out of range: use (0, 100]")
    serving = f"{manifests.deployment_name(config.name)}.{config.namespace}.svc.{cluster_domain}"
    shadow = (f"{manifests.deployment_name(shadow_name(config))}.{config.namespace}.svc."
              f"{cluster_domain}")
    return {
        "apiVersion": ISTIO_API_VERSION,
        "kind": "VirtualService",
        "metadata": {"name": f"{config.name}-mirror", "namespace": config.namespace,
                     "labels": {manifests.MANAGED_BY_LABEL: manifests.FIELD_MANAGER,
                                manifests.NAME_LABEL: config.name,
                                manifests.ROLE_LABEL: "shadow"}},
        "spec": {
            "hosts": [serving],
            "http": [{
                "route": [{"destination": {"host": serving, "port": {"number": 80}},
                           "weight": 100}],
                "mirror": {"host": shadow, "port": {"number": 80}},
                "mirrorPercentage": {"value": float(percent)},
            }],
        },
    }


def _standard_only(config: ServiceConfig) -> None:
    if config.mode is not Mode.STANDARD:
        raise ConfigError(
            f"a mirrored shadow of {config.name!r} needs Standard mode, not "
            f"{config.mode.value}: Knative owns its hosts' VirtualServices; use blue-green or "
            "a canary there")
