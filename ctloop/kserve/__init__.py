"""Rollout target ``kserve``: a model version as a KServe 0.21 InferenceService, canary first.

Decisions are pure functions over plain dicts, as the Kubernetes API returns them (the manifest,
readiness, the canary verdict, what an apply changes); a thin layer talks to the API server with
the real ``kubernetes`` client, and ``rollout`` strings them together. The removed KFP KServe
component reported success while pods failed, raced on status and "applied" by create-then-update
on any error; here an apply is one server-side apply, readiness counts only for the generation
written, and a version serves all traffic only after a probe of its own answers passed.

Modules:

- ``manifests``: the InferenceService manifests from ctloop's settings (``ServiceConfig``,
  ``Resources``, the storage URI rules, the canary, promotion, rollback and stop manifests) and
  what an apply would change (``plan_apply``); pure, no client.
- ``recording``: the predictor recording served requests to the object store (its flags, the
  credentials from the storage Secret), for the monitoring pipeline.
- ``candidate``: infra validation's per-run candidate service (never recording).
- ``status``: what KServe's and Kubernetes' controllers report, read: readiness for the
  generation written in either mode, failures waiting will not fix, the versions served and
  canaried, the deployment mode, the traffic a Standard-mode canary gets, where to probe; pure
  functions over dicts.
- ``probe``: the probe of one version's model server over HTTP, and the canary verdict on it.
- ``api``: the calls against the Kubernetes API (``kubernetes`` dynamic client): connect, get,
  apply, wait until ready, delete; ``rollout`` (canary, probe, promote or roll back) and infra
  validation's short-lived ``candidate``.

Each module names the KServe source files (kserve/kserve) whose behaviour it relies on. Here are
re-exported the names the rollout and infra validation components use.
"""

from ctloop.kserve.api import candidate, connect, delete_stale_candidates, rollout
from ctloop.kserve.candidate import candidate_name, candidate_service
from ctloop.kserve.manifests import SERVING_IMAGE, ServiceConfig, storage_uri
from ctloop.kserve.status import probe_url

__all__ = [
    "SERVING_IMAGE",
    "ServiceConfig",
    "candidate",
    "candidate_name",
    "candidate_service",
    "connect",
    "delete_stale_candidates",
    "probe_url",
    "rollout",
    "storage_uri",
]
