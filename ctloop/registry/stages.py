"""Moving versions between stages on a person's word: ``promote`` a staged version to production
(the approval), ``rollback`` a stage to the version it served before, ``describe`` what each
stage serves. Used by ``ctloop promote``/``ctloop rollback``, by the promote component (the
approval as a run of the ``ctloop-promote`` pipeline) and by tests.

Each checks and writes under one hold of the registry's lock, so two approvals cannot both land,
and a refusal (``PromotionRefused``, one line) changes nothing. Whatever moves is recorded on
the version's record (``"decisions"``): who, when, why, and the evidence it was judged on.
"""

from __future__ import annotations

import time
from typing import Any

from ctloop.errors import ConfigError, PromotionRefused
from ctloop.registry.base import PRODUCTION, STAGES, STAGING, Registry, Version, check_stage

# A decision another engineer's staging rollout records (shadow, canary, blue-green outcome).
DEPLOY_ACTION = "deploy"


def promote(registry: Registry, number: int, *, to: str = PRODUCTION, approved_by: str,
            reason: str, evidence: dict[str, Any] | None = None,
            lock_timeout_s: float = 60.0) -> Version:
    """Points production at staged version ``number``, on ``approved_by``'s word.

    Args:
        registry: The registry (``open_registry``).
        number: The version to promote: the one staging serves.
        to: The stage promoted to; only production (a CT run's rollout puts versions in
            staging).
        approved_by: Who approves (a name, recorded).
        reason: Why (recorded).
        evidence: What the approval was judged on; None: the version's evaluation metrics and
            its latest staging deployment decision, from its record.
        lock_timeout_s: How long to wait for another writer.

    Returns:
        The version production serves now.

    Raises:
        PromotionRefused: No approver or reason; the version does not exist, is not the one
            staging holds, is not blessed, or production serves it or a newer one already.
            Nothing was changed.
        ConfigError: ``to`` is not production.
    """
    check_stage(to)
    if to != PRODUCTION:
        raise ConfigError(f"promote moves a staged version to {PRODUCTION}, not to {to!r}: a CT "
                          f"run's rollout puts the versions it pushes in {STAGING}")
    _require(approved_by, "approved_by", "who approves", f"promote version {number}")
    _require(reason, "reason", "why", f"promote version {number}")
    refused = f"version {number} of {registry.uri} was not promoted"
    with registry.lock(lock_timeout_s) as lease:
        existing = [v.number for v in registry.versions()]
        if number not in existing:
            raise PromotionRefused(f"{refused}: it does not exist; versions: {existing}")
        staged = registry.serving(STAGING)
        if staged is None or staged.number != number:
            holds = ("holds no version" if staged is None
                     else f"holds version {staged.number}")
            raise PromotionRefused(
                f"{refused}: it is not in {STAGING}, which {holds}; a version is staged by a CT "
                f"run whose rollout targets {STAGING}, or by hand with "
                f"set_serving({number}, stage=\"{STAGING}\"), and promoted from there")
        record = registry.read_record(number)
        blessing = blessing_of(record)
        if blessing is None:
            raise PromotionRefused(
                f"{refused}: its record has no blessing (evaluate's verdict, which rollout "
                "stores under \"blessing\" for the versions it pushes), so nothing says it was "
                "judged; promote a version a CT run blessed")
        if blessing.get("blessed") is False:
            raise PromotionRefused(
                f"{refused}: it was not blessed ({blessing.get('reason') or 'no reason given'})"
                "; promote a version a CT run blessed")
        serving = registry.serving(PRODUCTION)
        if serving is not None and serving.number >= number:
            which = ("it already" if serving.number == number
                     else f"version {serving.number}, newer,")
            raise PromotionRefused(
                f"{refused}: {PRODUCTION} serves {which} (see `ctloop versions`); to return to "
                f"an older version, roll {PRODUCTION} back (`ctloop rollback`)")
        decision = {
            "action": "promote", "stage": PRODUCTION, "from_stage": STAGING,
            "approved_by": approved_by.strip(), "reason": reason.strip(),
            "at_unix": round(time.time(), 3),
            "previous_version": serving.number if serving is not None else None,
            "blessing": {k: blessing.get(k) for k in ("reason", "forced", "force_reason")},
            "evidence": evidence if evidence is not None else staging_evidence(record),
        }
        registry.write_pointer(lease, number, stage=PRODUCTION, decision=decision)
    return staged


def rollback(registry: Registry, stage: str, *, by: str, reason: str,
             lock_timeout_s: float = 60.0) -> Version:
    """Points ``stage`` back at the version it served before (the last of its history), and
    records the rollback on the version rolled back from.

    Returns:
        The version the stage serves now.

    Raises:
        PromotionRefused: No name or reason; the stage serves nothing, or remembers no earlier
            version, or that version no longer exists. Nothing was changed.
        ConfigError: An unknown stage.
    """
    check_stage(stage)
    _require(by, "by", "who rolls back", f"roll {stage} back")
    _require(reason, "reason", "why", f"roll {stage} back")
    refused = f"{stage} of {registry.uri} was not rolled back"
    with registry.lock(lock_timeout_s) as lease:
        current = registry.serving(stage)
        if current is None:
            raise PromotionRefused(f"{refused}: it serves no version")
        history = registry.history(stage)
        if not history:
            raise PromotionRefused(
                f"{refused}: its pointer remembers no version before version "
                f"{current.number}; point it at one with set_serving(N, stage=\"{stage}\")")
        target = history[-1]
        existing = [v.number for v in registry.versions()]
        if target not in existing:
            raise PromotionRefused(f"{refused}: version {target}, which it served before, no "
                                   f"longer exists; versions: {existing}")
        registry.write_decision(lease, current.number, {
            "action": "rollback", "stage": stage, "to_version": target, "by": by.strip(),
            "reason": reason.strip(), "at_unix": round(time.time(), 3)})
        registry.write_pointer(lease, target, stage=stage, previous=history[:-1])
    return registry.serving(stage) or current


def describe(registry: Registry) -> dict[str, dict[str, Any]]:
    """What each stage serves: ``{stage: {"version", "previous", "canary", "shadow"}}``, with
    ``canary`` ``{"version", "percent"}`` and ``shadow`` a version number, or None."""
    described = {}
    for stage in STAGES:
        serving = registry.serving(stage)
        canary = registry.canary(stage)
        shadow = registry.shadow(stage)
        described[stage] = {
            "version": serving.number if serving is not None else None,
            "previous": registry.history(stage),
            "canary": {"version": canary[0].number, "percent": canary[1]} if canary else None,
            "shadow": shadow.number if shadow is not None else None,
        }
    return described


def blessing_of(record: dict[str, Any]) -> dict[str, Any] | None:
    """A version's blessing from its record (None: it has none). Rollout pushes only blessed
    versions and stores evaluate's ``reason``, ``forced`` and ``force_reason``; a ``blessed``
    false there (a record written by hand) is a refusal too. A forced blessing counts."""
    blessing = record.get("blessing")
    return blessing if isinstance(blessing, dict) else None


def staging_evidence(record: dict[str, Any]) -> dict[str, Any]:
    """What a promotion was judged on, from the version's record: its evaluation metrics and
    infra figures, and its latest staging deployment decision (None if none was recorded)."""
    deployed = [d for d in record.get("decisions") or [] if isinstance(d, dict)
                and d.get("action") == DEPLOY_ACTION and d.get("stage") == STAGING]
    return {"metrics": record.get("metrics") or {}, "infra": record.get("infra") or {},
            "staging_deployment": deployed[-1] if deployed else None}


def _require(value: str, name: str, meaning: str, action: str) -> None:
    if not (value or "").strip():
        raise PromotionRefused(f"cannot {action}: {name} is empty; say {meaning} "
                               f"(--{name.replace('_', '-')} on the command line)")
