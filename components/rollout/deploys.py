"""Deploys: what puts a pushed version into service in one stage, and the decision each
records. ``Deploy`` is the shape ``logic.run`` calls; ``local_canary``, ``local_shadow`` and
``local_blue_green`` work on a running local server that follows the stage (``ctloop serve
--registry R --stage S``); ``logic.kserve_rollout`` on a cluster.

Plain Python, no kfp import (as ``logic``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ctloop.errors import StaleBaselineError
from ctloop.registry import PRODUCTION, Registry
from ctloop.serving import canary, client, release
from ctloop.settings import Release

if TYPE_CHECKING:
    from ctloop.registry.s3 import S3Registry


@dataclasses.dataclass(frozen=True)
class Deployment:
    """What a deploy did: ``promoted`` (the version serves in its stage now), why, target
    details, and the decision to record (stage, strategy, numbers)."""

    promoted: bool
    reason: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    decision: dict[str, Any] = dataclasses.field(default_factory=dict)


# No deploy: nothing serves to canary against.
PROMOTED_DIRECTLY = Deployment(True, "promoted (no running server to canary against)",
                               decision={"strategy": "direct"})


def decided(promoted: bool, reason: str, details: dict[str, Any], stage: str, strategy: str,
            numbers: dict[str, Any] | None = None) -> Deployment:
    """A Deployment whose decision says the stage, the strategy and the numbers behind it."""
    return Deployment(promoted, reason, {**details, "stage": stage, "strategy": strategy},
                      {"stage": stage, "strategy": strategy, "numbers": numbers or {}})


def start_over(registry: Registry, stage: str, baseline: int | None) -> int | None:
    """The version a deploy into ``stage`` starts over: in production, the run's baseline (what
    evaluation compared against); in another stage, what that stage serves now. Either is
    checked again under the registry's lock by the pointer operation that uses it."""
    if stage == PRODUCTION:
        return baseline
    current = registry.serving(stage=stage)
    return current.number if current else None


def first_in_stage(registry: Registry, number: int, stage: str, strategy: str,
                    details: dict[str, Any]) -> Deployment:
    """Nothing serves in ``stage`` yet (so no server follows it): the version serves there at
    once, only while none does."""
    try:
        registry.set_serving(number, expected_serving=None, stage=stage)
    except StaleBaselineError as exc:
        return decided(False, f"not deployed: {exc}", details, stage, strategy)
    return decided(True, f"promoted directly: {stage} served no version yet, nothing to "
                   f"{strategy.replace('_', '-')} against", details, stage, strategy)

# (registry, new version number, the serving version it was evaluated against) -> what
# happened. A deploy moves the serving pointer itself, only when the version serves all traffic
# and only over the version it was evaluated against.
Deploy = Callable[["Registry | S3Registry", int, "int | None"], Deployment]


def local_canary(serving_url: str, rows: list[dict[str, Any]], slo: canary.CanarySLO,
                 stage: str = PRODUCTION) -> Deploy:
    """A canary on a running local server that follows ``stage`` of the registry.

    The version takes ``slo.percent`` % of the server's requests while ``rows`` are sent; it is
    promoted only if the canary meets the SLO, else rolled back (it stays in the registry,
    unserved). Another run's version that came to serve since this one was evaluated (its
    canary ended first) means no canary, or a rolled back one: the evaluation no longer holds.
    """

    def deploy(registry: Registry, number: int, baseline: int | None) -> Deployment:
        details = {"target": "local", "serving_url": serving_url}
        over = start_over(registry, stage, baseline)
        if over is None and stage != PRODUCTION:
            return first_in_stage(registry, number, stage, "canary", details)
        promote, numbers = False, {}
        try:
            registry.start_canary(number, slo.percent, expected_serving=over, stage=stage)
        except StaleBaselineError as exc:
            return decided(False, f"no canary: {exc}", details, stage, "canary")
        try:
            stats = canary.probe(serving_url, registry.model_name, rows, str(number), slo)
            promote, why = canary.verdict(stats, str(number), slo)
            numbers = canary_numbers(stats, str(number))
        finally:
            # Whatever happened (the probe may raise), the canary ends; it is promoted only on
            # a passing verdict, and only over the version it started over.
            try:
                registry.end_canary(promote=promote, number=number, stage=stage)
            except StaleBaselineError as exc:
                promote, why = False, str(exc)
        action = "promoted" if promote else "rolled back"
        return decided(promote, f"{slo.percent}% canary {action}: {why}", details, stage,
                       "canary", {"percent": slo.percent, **numbers})

    return deploy


def canary_numbers(stats: canary.ProbeStats, version: str) -> dict[str, Any]:
    """The canary's numbers for the decision: its answers, the errors, its p50 and p99."""
    mine = stats.answered.get(version, [])
    return {"answered": len(mine), "requests": sum(map(len, stats.answered.values())),
            "errors": stats.errors,
            "p50_ms": round(client.percentile(mine, 50), 3) if mine else None,
            "p99_ms": round(client.percentile(mine, 99), 3) if mine else None}


def local_shadow(serving_url: str, rows: list[dict[str, Any]], settings: Release,
                 stage: str = PRODUCTION) -> Deploy:
    """A shadow on a running local server that follows ``stage`` of the registry.

    The version sees a copy of every request the stage's serving version answers (``rows`` are
    sent as such requests here) and answers no client; it is promoted only if its answers agree
    with the served ones often enough, it failed no more than allowed and its p99 meets the SLO
    (``release.shadow_verdict``); else dropped (it stays in the registry, unserved).
    """

    def check(model_name: str, number: int) -> tuple[bool, str, dict[str, Any]]:
        evidence = release.shadow_probe(serving_url, model_name, rows, number, settings)
        return release.shadow_verdict(evidence, number, settings)

    def deploy(registry: Registry, number: int, baseline: int | None) -> Deployment:
        details = {"target": "local", "serving_url": serving_url}
        tried = _shadow_trial(registry, number, baseline, stage, "shadow", details, check)
        if isinstance(tried, Deployment):
            return tried
        promote, why, numbers, _ = tried
        action = "promoted" if promote else "not promoted"
        return decided(promote, f"shadow {action}: {why}", details, stage, "shadow", numbers)

    return deploy


def local_blue_green(serving_url: str, rows: list[dict[str, Any]], settings: Release,
                     stage: str = PRODUCTION) -> Deploy:
    """Blue-green on a running local server that follows ``stage`` of the registry.

    The green is the stage's SHADOW pointer (the registry's canary takes 1..100 %, and the
    server loads a shadow beside the serving version without client traffic): the server loads
    it, ``rows`` check it at its version's route, and on a passing verdict ``end_shadow``
    moves the stage's pointer to it at once (only over the version it started over); the
    server swaps the loaded green in and keeps the old version loaded ("warm") for its
    ``--warm-seconds``, so a rollback is a swap too. A failing green is dropped.
    """

    def check(model_name: str, number: int) -> tuple[bool, str, dict[str, Any]]:
        evidence = release.green_probe(serving_url, model_name, rows, number, settings)
        return release.green_verdict(evidence, number, settings)

    def deploy(registry: Registry, number: int, baseline: int | None) -> Deployment:
        details = {"target": "local", "serving_url": serving_url}
        tried = _shadow_trial(registry, number, baseline, stage, "blue_green", details, check)
        if isinstance(tried, Deployment):
            return tried
        promote, why, numbers, over = tried
        if not promote:
            return decided(False, f"green not switched to: {why}", details, stage,
                           "blue_green", numbers)
        # The switch: the server swaps the green in on its next poll of the registry.
        switched, status = release.wait_for(
            serving_url, registry.model_name, lambda s: s.get("serving") == str(number),
            settings.deadline_s)
        warm_s = status.get("warm_s", settings.blue_green_warm_s)
        numbers = {**numbers, "previous_version": over, "warm_s": warm_s,
                   "server_switched": switched, "server_loads": status.get("loads")}
        details = {**details, "previous_version": over, "warm_s": warm_s,
                   "rollback": rollback_command(registry.model_name, stage, str(registry.root))}
        return decided(True, f"switched to green: {why}; version {over} kept warm for "
                       f"{warm_s:g} s", details, stage, "blue_green", numbers)

    return deploy


def _shadow_trial(registry: Registry, number: int, baseline: int | None, stage: str,
                  strategy: str, details: dict[str, Any],
                  check: Callable[[str, int], tuple[bool, str, dict[str, Any]]]
                  ) -> Deployment | tuple[bool, str, dict[str, Any], int | None]:
    """Runs version ``number`` as ``stage``'s shadow pointer (a shadow, or a blue-green's green)
    over what the stage serves: ``check(model_name, number)`` judges it, and the trial ends
    whatever happened, moving the stage's pointer only on a pass and only over the version it
    started over. Returns the Deployment when there was no trial (a stage that serves nothing
    takes the version directly; another run's version came first), else ``(promote, why,
    numbers, the version it started over)``."""
    over = start_over(registry, stage, baseline)
    if over is None and stage != PRODUCTION:
        return first_in_stage(registry, number, stage, strategy, details)
    noun = "shadow" if strategy == "shadow" else "green"
    promote, numbers = False, {}
    try:
        registry.start_shadow(number, expected_serving=over, stage=stage)
    except StaleBaselineError as exc:
        return decided(False, f"no {noun}: {exc}", details, stage, strategy)
    try:
        promote, why, numbers = check(registry.model_name, number)
    finally:
        try:
            registry.end_shadow(promote=promote, number=number, stage=stage)
        except StaleBaselineError as exc:
            promote, why = False, str(exc)
    return promote, why, numbers, over


def rollback_command(model_name: str, stage: str, registry_uri: str) -> str:
    """The command that points ``stage`` back at the version it served before."""
    return (f"ctloop rollback {model_name} --stage {stage} --by NAME --reason TEXT "
            f"--registry {registry_uri}")


def promote_command(model_name: str, version: int | None, registry_uri: str) -> str:
    """The command a person runs to approve a staged version for production."""
    return (f"ctloop promote {model_name} {version} --to {PRODUCTION} --approved-by NAME "
            f"--reason TEXT --registry {registry_uri}")
