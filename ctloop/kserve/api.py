"""The calls against the Kubernetes API server, with the real ``kubernetes`` dynamic client.

``connect``; ``get``, ``apply`` (one server-side apply), ``delete`` and ``wait_ready`` on an
InferenceService; ``rollout``, which strings manifests, readiness and the probe together: canary,
probe, then promote or roll back; and infra validation's short-lived ``candidate``.

Deleting an InferenceService waits for KServe's finalizer (``inferenceservice.finalizers``,
pkg/controller/v1beta1/inferenceservice/controller.go in kserve/kserve): the object lingers
while it goes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ctloop.errors import ClusterError
from ctloop.kserve import probe
from ctloop.kserve.candidate import CANDIDATE_ROLE, candidate_service
from ctloop.kserve.manifests import (
    API_VERSION,
    FIELD_MANAGER,
    KIND,
    NAME_LABEL,
    ROLE_LABEL,
    Action,
    Mode,
    ServiceConfig,
    inference_service,
    plan_apply,
    promoted,
    restore,
    stopped,
)
from ctloop.kserve.status import (
    ISVC_LABEL,
    STANDARD_CANARY_TRAFFIC,
    State,
    check_mode,
    expected_deployments,
    mode_of,
    one_line,
    probe_url,
    readiness,
    serves_nothing,
    serving_version,
    standard_readiness,
)
from ctloop.serving.canary import CanarySLO

if TYPE_CHECKING:
    from kubernetes.dynamic import DynamicClient


def connect(kubeconfig: str | None = None) -> DynamicClient:
    """A ``kubernetes.dynamic.DynamicClient`` on the cluster: in-cluster config (a KFP pod),
    else ``kubeconfig`` or ``~/.kube/config``.

    Raises:
        ClusterError: No configuration, or the API server does not answer.
    """
    import urllib3
    from kubernetes import client as k8s
    from kubernetes import config, dynamic

    where = kubeconfig or "in-cluster service account, then ~/.kube/config"
    try:
        if kubeconfig:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        else:
            try:
                config.load_incluster_config()
                api_client = k8s.ApiClient()
            except config.ConfigException:
                api_client = config.new_client_from_config()
        return dynamic.DynamicClient(api_client)  # reads the API's discovery documents
    except (config.ConfigException, k8s.ApiException, urllib3.exceptions.HTTPError,
            OSError) as exc:
        raise ClusterError(f"no Kubernetes cluster reachable: {one_line(exc)} (tried {where}); "
                           "check the kubeconfig or run inside the cluster") from exc


def _isvc_api(api: DynamicClient):
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        return api.resources.get(api_version=API_VERSION, kind=KIND)
    except ResourceNotFoundError as exc:
        raise ClusterError(f"the cluster has no {KIND} API ({API_VERSION}): install KServe "
                           "0.21 or point at a cluster that has it") from exc


def _cluster_error(what: str, exc: Exception) -> ClusterError:
    summary = exc.summary() if hasattr(exc, "summary") else exc
    return ClusterError(f"{what} failed: {one_line(summary)}")


def get(api: DynamicClient, name: str, namespace: str) -> dict[str, Any] | None:
    """The InferenceService as a plain dict, or None if there is none.

    Raises:
        ClusterError: The API server refused (RBAC, no KServe) or is unreachable.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    try:
        return _isvc_api(api).get(name=name, namespace=namespace).to_dict()
    except NotFoundError:
        return None
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"reading InferenceService {namespace}/{name}", exc) from exc


def apply(api: DynamicClient, manifest: dict[str, Any]) -> int:
    """Server-side applies ``manifest`` as field manager ``ctloop``; returns the generation.

    One request creates or updates, atomically; fields ctloop applied before and leaves out now
    are removed (a canary, ``canaryTrafficPercent``); ``force`` takes over fields another
    manager set, since ctloop is the owner of record. An unchanged manifest keeps the
    generation.

    Raises:
        ClusterError: The API server or KServe's webhook refused it; the message is theirs.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError

    meta = manifest["metadata"]
    try:
        applied = api.server_side_apply(_isvc_api(api), body=manifest,
                                        field_manager=FIELD_MANAGER, force_conflicts=True)
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"applying InferenceService {meta['namespace']}/{meta['name']}",
                             exc) from exc
    return int(applied.metadata.generation)


def delete(api: DynamicClient, name: str, namespace: str, *, wait_s: float = 0.0,
           poll_s: float = 2.0) -> bool:
    """Deletes the InferenceService; one that is already gone is no error.

    The API server keeps the object (with a deletionTimestamp) until KServe's finalizer has
    run (pkg/controller/v1beta1/inferenceservice/controller.go); ``wait_s`` > 0 waits that long
    for it to be gone.

    Returns:
        Whether it is gone.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, NotFoundError

    try:
        _isvc_api(api).delete(name=name, namespace=namespace)
    except NotFoundError:
        return True
    except (DynamicApiError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"deleting InferenceService {namespace}/{name}", exc) from exc
    deadline = time.monotonic() + wait_s
    while True:
        if get(api, name, namespace) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def _list(api: DynamicClient, api_version: str, kind: str, namespace: str,
          selector: str) -> list[dict[str, Any]]:
    import urllib3
    from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

    try:
        listed = api.resources.get(api_version=api_version, kind=kind).get(
            namespace=namespace, label_selector=selector)
    except (DynamicApiError, ResourceNotFoundError, urllib3.exceptions.HTTPError) as exc:
        raise _cluster_error(f"listing {kind}s {selector} in {namespace} (the Role needs get "
                             f"and list on them)", exc) from exc
    return listed.to_dict().get("items") or []


def predictor_objects(api: DynamicClient, name: str, namespace: str
                      ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The Deployments (by name) and pods KServe runs for InferenceService ``name`` in
    Standard mode: both carry its ``serving.kserve.io/inferenceservice`` label.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    selector = f"{ISVC_LABEL}={name}"
    deployments = _list(api, "apps/v1", "Deployment", namespace, selector)
    pods = _list(api, "v1", "Pod", namespace, selector)
    return {d["metadata"]["name"]: d for d in deployments}, pods


def wait_ready(api: DynamicClient, manifest: dict[str, Any], generation: int, timeout_s: float,
               poll_s: float, history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Polls until what ``manifest`` says serves: ``standard_readiness`` in Standard mode,
    ``readiness`` for ``generation`` in Knative mode; returns what it saw.

    Args:
        api: A client from ``connect``.
        manifest: The manifest applied.
        generation: The generation ``apply`` returned.
        timeout_s: How long to wait.
        poll_s: Seconds between reads.
        history: A list to append each change of state to (``elapsed_s``, ``state``,
            ``reason``), so a caller keeps it when this raises; a new list by default.

    Returns:
        ``history``.

    Raises:
        ClusterError: FAILED, gone, or not READY within ``timeout_s``; carries the status.
    """
    history = [] if history is None else history
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    standard = mode_of(manifest) is Mode.STANDARD
    expected = expected_deployments(manifest) if standard else {}
    started = time.monotonic()
    while True:
        isvc = get(api, name, namespace)
        if isvc is None or (isvc.get("metadata") or {}).get("deletionTimestamp"):
            raise ClusterError(f"InferenceService {namespace}/{name} disappeared while waiting "
                               "for it to become ready")
        if standard:
            now = standard_readiness(isvc, expected, *predictor_objects(api, name, namespace))
        else:
            now = readiness(isvc, generation)
        elapsed = round(time.monotonic() - started, 1)
        if not history or (history[-1]["state"], history[-1]["reason"]) != (now.state.value,
                                                                            now.reason):
            history.append({"elapsed_s": elapsed, "state": now.state.value, "reason": now.reason})
        if now.state is State.READY:
            return history
        if now.state is State.FAILED:
            raise ClusterError(f"InferenceService {namespace}/{name} generation {generation} "
                               f"failed: {now.reason}")
        if elapsed >= timeout_s:
            raise ClusterError(f"InferenceService {namespace}/{name} generation {generation} not "
                               f"ready after {timeout_s:g} s: {now.reason}")
        time.sleep(poll_s)


def rollout(api: DynamicClient, config: ServiceConfig, version: int, artifact_uri: str,
            rows: list[dict[str, Any]], slo: CanarySLO, *, canary: bool = True,
            probe_window_s: float | None = None, ready_timeout_s: float = 600.0,
            poll_s: float = 5.0,
            url_for: Callable[[dict[str, Any], bool], str | None] = probe_url) -> dict[str, Any]:
    """Rolls registry ``version`` out as ``config``'s InferenceService, or rolls it back.

    1. Reads the service. None yet, or stopped: the version is deployed directly (nothing to
       canary against). Else, with ``canary``, it takes ``slo.percent`` % as a canary; without,
       it replaces the serving version at once. If it already serves all traffic, nothing is
       written ("unchanged").
    2. Applies, waits until ready for the generation written, then probes the new version
       alone (``url_for``) with ``rows``: ``slo.requests`` requests, or for ``probe_window_s``.
    3. Verdict (``probe.canary_verdict``; not ready counts as a rollback): promote, a canary by a
       second apply (``promoted``) and a wait; or roll back by applying the previous spec
       (``restore``), or by stopping the service if nothing served before (``stopped``).

    The registry's serving pointer is not touched: the caller moves it to ``version`` only
    when the outcome's ``promoted`` is True, so registry and cluster agree on what serves.

    Args:
        api: A client from ``connect``.
        config: Where and how the model serves.
        version: The registry version being rolled out.
        artifact_uri: Its model artifact (``minio://``, ``s3://`` or ``gs://``).
        rows: Request rows for the probe (the model's features; no nulls for ``tensorflow``,
            which TF Serving rejects).
        slo: The canary's share and how it is judged (``percent``, ``requests``,
            ``min_canary_requests``, ``max_error_rate``, ``max_p99_ms``, ``concurrency``).
        canary: Canary first (needs a serving InferenceService); False: switch directly.
        probe_window_s: Probe for this many seconds instead of ``slo.requests`` requests.
        ready_timeout_s: Longest wait for each apply to become ready.
        poll_s: Seconds between status reads.
        url_for: ``(isvc, canary) -> base URL`` of the version to probe (default: in-cluster
            addresses, ``probe_url``).

    Returns:
        The outcome: ``action`` (promoted, rolled_back, unchanged), ``promoted``, ``reason``,
        ``strategy``, ``mode``, ``name``, ``namespace``, ``version``, ``previous_version``,
        ``canary_percent``, ``traffic`` (what share of real requests the canary saw, when that
        is not ``canary_percent``), ``verdict``, ``probe``, ``readiness`` (per phase:
        canary/deploy, promote, rollback) and ``generations``.

    Raises:
        ConfigError: Bad parameters, or a mode or canary KServe cannot run.
        ClusterError: The cluster refused an apply, or the rollback itself did not become
            ready (the service needs attention).
    """
    name, namespace = config.name, config.namespace
    existing = get(api, name, namespace)
    check_mode(existing, config)
    # A stopped service (a first version that failed) serves nothing: no canary against it, and
    # stopping it again is the way back.
    serving = None if serves_nothing(existing) else existing
    # A version that already serves is not its own canary: the plain manifest then shows
    # whether anything is left to do.
    as_canary = canary and serving is not None and serving_version(serving) != version
    desired = inference_service(config, version, artifact_uri,
                                canary_percent=slo.percent if as_canary else None,
                                stable=existing)
    final = promoted(desired) if as_canary else desired
    phase = "canary" if as_canary else "deploy"
    outcome: dict[str, Any] = {
        "action": "unchanged", "promoted": False, "reason": "", "mode": config.mode.value,
        "strategy": "canary" if as_canary else "direct", "name": name, "namespace": namespace,
        "version": version, "previous_version": serving_version(serving),
        "canary_percent": slo.percent if as_canary else None,
        "traffic": (STANDARD_CANARY_TRAFFIC if as_canary and config.mode is Mode.STANDARD
                    else None),
        "verdict": None, "probe": None, "readiness": {phase: []}, "generations": {},
    }
    if existing is not None and plan_apply(existing, final) is Action.UNCHANGED:
        outcome.update(promoted=True, reason=f"version {version} already serves all traffic")
        return outcome

    generation = outcome["generations"][phase] = apply(api, desired)
    try:
        wait_ready(api, desired, generation, ready_timeout_s, poll_s,
                   outcome["readiness"][phase])
    except ClusterError as exc:
        judged = probe.Verdict(False, f"not ready: {exc}")
    else:
        url = url_for(get(api, name, namespace) or {}, as_canary)
        if url is None:
            judged = probe.Verdict(False, "no URL to probe the new version at in the status")
        else:
            stats = probe.probe(url, name, rows, str(version), concurrency=slo.concurrency,
                                n_requests=None if probe_window_s else slo.requests,
                                window_s=probe_window_s)
            outcome["probe"] = probe.summary(url, stats, str(version))
            judged = probe.canary_verdict(stats, slo, str(version))
    if judged.promote and as_canary:
        outcome["readiness"]["promote"] = []
        generation = outcome["generations"]["promote"] = apply(api, final)
        try:
            wait_ready(api, final, generation, ready_timeout_s, poll_s,
                       outcome["readiness"]["promote"])
        except ClusterError as exc:
            judged = probe.Verdict(False, f"canary passed ({judged.reason}) but its promotion was "
                             f"not ready: {exc}")
    outcome["verdict"] = dataclasses.asdict(judged)
    if judged.promote:
        outcome.update(action="promoted", promoted=True, reason=judged.reason)
        return outcome

    outcome.update(action="rolled_back", reason=judged.reason)
    if serving is None:
        # Nothing served before; stopping puts that back while the object keeps its status and
        # events to look at, and the next rollout's apply drops the annotation again.
        outcome["generations"]["rollback"] = apply(api, stopped(desired))
        outcome["reason"] += "; nothing served before, so the InferenceService is stopped"
        return outcome
    outcome["readiness"]["rollback"] = []
    back = restore(serving, pin_traffic=as_canary and config.mode is Mode.KNATIVE)
    generation = outcome["generations"]["rollback"] = apply(api, back)
    try:
        wait_ready(api, back, generation, ready_timeout_s, poll_s,
                   outcome["readiness"]["rollback"])
    except ClusterError as exc:
        raise ClusterError(f"rolled {namespace}/{name} back to version "
                           f"{outcome['previous_version']} after: {judged.reason}; but the "
                           f"restored spec is not ready: {exc}") from exc
    return outcome


# --- infra validation's short-lived candidate -----------------------------------------------


def delete_stale_candidates(api: DynamicClient, config: ServiceConfig,
                            older_than_s: float = 3600.0, now: float | None = None) -> list[str]:
    """Deletes the candidates of ``config.name`` that runs killed mid-validation left, those
    created more than ``older_than_s`` ago (a run's own lives minutes); returns their names.
    Younger ones may be another run's, still validating: they are left alone.

    Raises:
        ClusterError: The API server refused (RBAC) or is unreachable.
    """
    import datetime

    now = time.time() if now is None else now
    selector = f"{NAME_LABEL}={config.name},{ROLE_LABEL}={CANDIDATE_ROLE}"
    stale = []
    for item in _list(api, API_VERSION, KIND, config.namespace, selector):
        meta = item["metadata"]
        created = datetime.datetime.fromisoformat(
            str(meta.get("creationTimestamp")).replace("Z", "+00:00")).timestamp()
        if now - created > older_than_s and not meta.get("deletionTimestamp"):
            delete(api, meta["name"], config.namespace)
            stale.append(meta["name"])
    return stale


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A ready candidate: its name (also the model name in request paths), its in-cluster
    address, and how long it took to become ready."""

    name: str
    namespace: str
    url: str
    startup_s: float


@contextlib.contextmanager
def candidate(api: DynamicClient, config: ServiceConfig, artifact_uri: str, token: str,
              startup_timeout_s: float, poll_s: float = 5.0,
              gone_timeout_s: float = 120.0) -> Iterator[Candidate]:
    """Runs the candidate as its own short-lived InferenceService until the block ends.

    Named per run (``candidate_name``), so no other run's candidate is ever waited on, probed or
    replaced. Ready means what ``wait_ready`` says, so a pod that cannot pull its image or keeps
    crashing fails at once instead of at the deadline. Afterwards it is deleted and waited for
    (KServe's finalizer) up to ``gone_timeout_s``.

    Raises:
        ConfigError: A bad token or artifact URI.
        ClusterError: Not ready within ``startup_timeout_s``, failed, or refused; carries the
            status.
    """
    manifest = candidate_service(config, artifact_uri, token)
    name, namespace = manifest["metadata"]["name"], config.namespace
    started = time.monotonic()
    try:
        generation = apply(api, manifest)
        wait_ready(api, manifest, generation, startup_timeout_s, poll_s)
        url = probe_url(get(api, name, namespace) or {}, canary=False)
        if url is None:
            raise ClusterError(f"InferenceService {namespace}/{name} is ready but reports no "
                               "address to send requests to")
        yield Candidate(name, namespace, url, time.monotonic() - started)
    finally:
        delete(api, name, namespace, wait_s=gone_timeout_s, poll_s=poll_s)
