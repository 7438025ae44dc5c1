"""Promote: the approval of a staged version, as a task (``ctloop.registry.stages.promote``),
and its decision as Markdown for the KFP UI. No kfp import: tested in-process."""

from __future__ import annotations

import datetime
from typing import Any

from ctloop.registry import PRODUCTION, STAGING, open_registry, stages


def run(model_name: str, version: int, approved_by: str, reason: str, registry_uri: str,
        s3_endpoint_url: str | None = None) -> dict[str, Any]:
    """Promotes staged ``version`` to production on ``approved_by``'s word; returns the
    decision recorded on it (with ``"version"`` and ``"registry"``).

    Raises:
        PromotionRefused: The registry refused it (one line; nothing changed).
    """
    registry = open_registry(registry_uri, model_name, s3_endpoint_url)
    promoted = stages.promote(registry, version, to=PRODUCTION, approved_by=approved_by,
                              reason=reason)
    decisions = registry.read_record(promoted.number).get("decisions") or [{}]
    return {**decisions[-1], "version": promoted.number, "registry": registry.uri}


def report_markdown(decision: dict[str, Any], model_name: str) -> str:
    """The decision for the KFP UI: what moved, who approved it and why, and the evidence."""
    when = datetime.datetime.fromtimestamp(decision["at_unix"], datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC") if decision.get("at_unix") is not None else "-"
    previous = decision.get("previous_version")
    blessing = decision.get("blessing") or {}
    lines = [f"# Promotion: {model_name}", "",
             f"**PROMOTED**: version {decision['version']} from {STAGING} to {PRODUCTION}", "",
             "| | |", "|---|---|",
             f"| registry | {decision.get('registry', '-')} |",
             f"| {PRODUCTION} before | "
             f"{'none' if previous is None else f'version {previous}'} |",
             f"| {PRODUCTION} now | version {decision['version']} |",
             f"| approved by | {decision.get('approved_by', '-')} |",
             f"| reason | {decision.get('reason', '-')} |",
             f"| at | {when} |",
             f"| blessing | {blessing.get('reason') or '-'}"
             + (f" (**forced**: {blessing.get('force_reason') or 'no reason recorded'})"
                if blessing.get("forced") else "") + " |"]
    evidence = decision.get("evidence") or {}
    metrics = evidence.get("metrics") or {}
    if metrics:
        lines += ["", "## Evaluation", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {_shown(value)} |" for name, value in sorted(metrics.items())]
    deployed = evidence.get("staging_deployment")
    if deployed:
        lines += ["", f"## Latest {STAGING} deployment", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_shown(value)} |" for key, value in sorted(deployed.items())]
    other = {k: v for k, v in evidence.items()
             if k not in ("metrics", "infra", "staging_deployment")}
    if other:
        lines += ["", "## Evidence", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_shown(value)} |" for key, value in sorted(other.items())]
    return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value).replace("|", "\\|")
