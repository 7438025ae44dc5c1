"""The shadow and blue-green phases against a running local server that follows a stage
(``ctloop serve --registry R --stage S``), and their verdicts; the canary's are
``ctloop.serving.canary``'.

- shadow: the rows are sent as ordinary requests (they stand in for live traffic here; on a live
  server real traffic is compared too); the server runs each served request through the shadow
  off the request path and counts (``GET /v1/models/<name>/release``). The verdict reads its
  counters: agreement, shadow errors, shadow p99.
- blue-green: the green is loaded beside the serving version with no traffic; the rows are sent
  to its version's route (``/v2/models/<name>/versions/<v>/infer``), and the verdict reads
  their errors and p99.

``Release`` holds their settings (``ctloop.settings.Release`` is this one). Standard library
only: the pipeline environment (rollout, settings) imports it.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
import typing
from collections.abc import Callable
from typing import Any

from ctloop.errors import ConfigError, CtloopError
from ctloop.serving import client

# How often the server's release status is read while waiting.
POLL_S = 0.2


@dataclasses.dataclass(frozen=True)
class Release:
    """How a stage's new version is released (``strategy``) and what it must show first.

    ``canary`` (``CanarySLO``): it answers a share of the clients. ``shadow``: it sees a copy of
    the requests the serving version answers and answers no client; its answers are compared
    with the served ones (``ctloop.serving.shadow``). ``blue_green``: it is loaded beside the
    serving version without traffic, checked at its own version's route, then the stage's
    pointer moves at once, the old version kept loaded for a rollback with no reload.
    """

    STRATEGIES: typing.ClassVar[tuple[str, ...]] = ("canary", "shadow", "blue_green")

    strategy: str = "canary"  # the existing behaviour, for callers that name none
    # Requests sent while the shadow runs: 200 single rows measure agreement to about +-3 %.
    shadow_requests: int = 200
    # Fewer compared than this (the shadow never loaded, or its queue dropped them) is too
    # little evidence: not promoted (fail safe).
    min_shadow_compared: int = 100
    # Classification: the share of rows with the same predicted label; regression: within the
    # server's tolerance. A model retrained on a new span changes some answers by design: the
    # built-in data's span-2 model, blessed against span 1's, agrees with it on 92.5 % of rows.
    # Below 80 % it would change more than 1 answer in 5 clients see, which evaluation on
    # held-out rows does not show a person: not promoted. (0: report the rate only.)
    min_agreement: float = 0.8
    # A shadow that fails requests would fail clients once promoted: none allowed by default.
    max_shadow_error_rate: float = 0.0
    # The shadow's own scoring time (off the request path), held to the canary's p99 SLO.
    max_shadow_p99_ms: float = 250.0
    # Requests sent to the green at its version's route before the switch.
    green_requests: int = 100
    # The green answers checks only: any failure is a defect the clients would meet.
    max_green_error_rate: float = 0.0
    # The green's p99 at its route (round trip, as the canary's is measured).
    max_green_p99_ms: float = 250.0
    # How long the server keeps the previous version loaded after a switch (`ctloop serve
    # --warm-seconds`; its default): the report says so, the server says what it really keeps.
    blue_green_warm_s: float = 600.0
    # Longest wait for the server to load the shadow/green and for the comparisons to finish.
    deadline_s: float = 60.0
    concurrency: int = 2

    def __post_init__(self):
        if self.strategy not in self.STRATEGIES:
            raise ConfigError(f"release strategy {self.strategy!r} is unknown: use one of "
                              f"{', '.join(self.STRATEGIES)}")
        if self.min_shadow_compared < 1 or self.shadow_requests < self.min_shadow_compared:
            raise ConfigError(
                f"shadow requests {self.shadow_requests} / min compared "
                f"{self.min_shadow_compared} are invalid: use min >= 1 and requests >= min")
        for name in ("min_agreement", "max_shadow_error_rate", "max_green_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} {getattr(self, name)} is out of range: use [0, 1]")
        for name in ("max_shadow_p99_ms", "max_green_p99_ms", "deadline_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} {getattr(self, name)} is invalid: use a value > 0")
        if self.green_requests < 1 or self.concurrency < 1 or not self.blue_green_warm_s >= 0:
            raise ConfigError(
                f"green_requests {self.green_requests}, concurrency {self.concurrency}, "
                f"blue_green_warm_s {self.blue_green_warm_s} are invalid: use >= 1, >= 1, >= 0")


@dataclasses.dataclass
class Evidence:
    """What a phase saw: the server's release status at the end, and the requests sent."""

    loaded: bool = False  # the server loaded the version within the deadline
    sent: int = 0
    answered_by: dict[str, int] = dataclasses.field(default_factory=dict)  # version -> answers
    latencies_ms: list[float] = dataclasses.field(default_factory=list)
    errors: int = 0
    error_samples: list[str] = dataclasses.field(default_factory=list)
    status: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def shadow(self) -> dict[str, Any]:
        return self.status.get("shadow") or {}


def wait_for(url: str, model_name: str, condition: Callable[[dict[str, Any]], bool],
             deadline_s: float) -> tuple[bool, dict[str, Any]]:
    """Reads the server's release status until ``condition`` holds or ``deadline_s`` passed;
    returns (whether it held, the last status read). An unreachable server is waited for."""
    deadline = time.monotonic() + deadline_s
    status: dict[str, Any] = {}
    while True:
        try:
            status = client.release_status(url, model_name)
            if condition(status):
                return True, status
        except CtloopError:
            pass  # not up (yet): the deadline decides
        if time.monotonic() >= deadline:
            return False, status
        time.sleep(POLL_S)


def _send(evidence: Evidence, rows: list[dict[str, Any]], count: int, concurrency: int,
          ask: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    lock = threading.Lock()

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            answer = ask(rows[i % len(rows)])
            with lock:
                evidence.latencies_ms.append((time.perf_counter() - started) * 1000)
                version = str(answer.get("model_version"))
                evidence.answered_by[version] = evidence.answered_by.get(version, 0) + 1
        except CtloopError as exc:
            with lock:
                evidence.errors += 1
                if len(evidence.error_samples) < 3:
                    evidence.error_samples.append(str(exc))

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    evidence.sent += count


def _compared(status: dict[str, Any]) -> int:
    shadow = status.get("shadow") or {}
    return sum(shadow.get(k, 0) for k in ("compared", "errors", "dropped"))


def shadow_probe(url: str, model_name: str, rows: list[dict[str, Any]], number: int,
                 release: Release) -> Evidence:
    """Waits until the server runs version ``number`` as its shadow, sends
    ``release.shadow_requests`` single-row requests, and waits until the shadow has dealt
    with them all (compared, failed or dropped) or the deadline."""
    evidence = Evidence()
    version = str(number)
    loaded, status = wait_for(url, model_name,
                              lambda s: (s.get("shadow") or {}).get("version") == version,
                              release.deadline_s)
    evidence.loaded, evidence.status = loaded, status
    if not loaded:
        return evidence
    before = _compared(status)
    _send(evidence, rows, release.shadow_requests, release.concurrency,
          lambda row: client.predict_raw(url, model_name, [row]))
    answered = sum(evidence.answered_by.values())
    _, evidence.status = wait_for(
        url, model_name,
        lambda s: (s.get("shadow") or {}).get("version") == version
        and _compared(s) >= before + answered, release.deadline_s)
    return evidence


def shadow_verdict(evidence: Evidence, number: int, release: Release
                   ) -> tuple[bool, str, dict[str, Any]]:
    """Promote or not, why, and the numbers. Too little evidence does not promote."""
    shadow = evidence.shadow
    rows_compared = shadow.get("rows_compared", 0)
    compared, errors = shadow.get("compared", 0), shadow.get("errors", 0)
    agreement = shadow.get("rows_agreed", 0) / rows_compared if rows_compared else None
    error_rate = errors / (compared + errors) if compared + errors else None
    numbers = {
        "sent": evidence.sent, "answered_by": evidence.answered_by,
        "client_errors": evidence.errors, "compared": compared,
        "agreed": shadow.get("agreed", 0), "rows_compared": rows_compared,
        "rows_agreed": shadow.get("rows_agreed", 0),
        "agreement": None if agreement is None else round(agreement, 4),
        "errors": errors, "error_rate": None if error_rate is None else round(error_rate, 4),
        "dropped": shadow.get("dropped", 0), "p50_ms": shadow.get("p50_ms"),
        "p99_ms": shadow.get("p99_ms"),
    }
    if not evidence.loaded:
        return False, (f"the server did not run version {number} as its shadow within "
                       f"{release.deadline_s:g} s (it may not load; see the server's log)"), numbers
    if error_rate is not None and error_rate > release.max_shadow_error_rate:
        return False, (f"shadow failed {errors} of {compared + errors} requests "
                       f"({error_rate:.1%} > {release.max_shadow_error_rate:.1%}): "
                       f"{shadow.get('last_error')}"), numbers
    if compared < release.min_shadow_compared:
        return False, (f"shadow compared {compared} requests ({numbers['dropped']} dropped), "
                       f"fewer than the {release.min_shadow_compared} needed to judge it"), numbers
    if agreement < release.min_agreement:
        return False, (f"shadow agreed on {agreement:.1%} of {rows_compared} rows, below "
                       f"{release.min_agreement:.1%}"), numbers
    p99 = shadow.get("p99_ms")
    if p99 is None or p99 > release.max_shadow_p99_ms:
        return False, f"shadow p99 {p99} ms above {release.max_shadow_p99_ms:g} ms", numbers
    return True, (f"shadow agreed on {agreement:.1%} of {rows_compared} rows "
                  f">= {release.min_agreement:.1%} ({compared} requests compared, {errors} "
                  f"errors, {numbers['dropped']} dropped), p99 {p99} ms "
                  f"<= {release.max_shadow_p99_ms:g} ms"), numbers


def green_probe(url: str, model_name: str, rows: list[dict[str, Any]], number: int,
                release: Release) -> Evidence:
    """Waits until the server has version ``number`` loaded as its green (no traffic), then
    sends ``release.green_requests`` single-row requests to its version's route (after one
    first, cold, answer that is not measured)."""
    evidence = Evidence()
    version = str(number)
    loaded, evidence.status = wait_for(
        url, model_name, lambda s: (s.get("shadow") or {}).get("version") == version,
        release.deadline_s)
    evidence.loaded = loaded
    if not loaded:
        return evidence

    def ask(row: dict[str, Any]) -> dict[str, Any]:
        return client.predict_version(url, model_name, version, [row])

    try:
        ask(rows[0])
    except CtloopError:
        pass  # counted below, where it repeats
    _send(evidence, rows, release.green_requests, release.concurrency, ask)
    return evidence


def green_verdict(evidence: Evidence, number: int, release: Release
                  ) -> tuple[bool, str, dict[str, Any]]:
    """Switch to the green or not, why, and the numbers."""
    answered = evidence.answered_by.get(str(number), 0)
    total = evidence.sent
    error_rate = evidence.errors / total if total else None
    p99 = (round(client.percentile(evidence.latencies_ms, 99), 3) if evidence.latencies_ms
           else None)
    p50 = (round(client.percentile(evidence.latencies_ms, 50), 3) if evidence.latencies_ms
           else None)
    numbers = {"sent": total, "answered": answered, "errors": evidence.errors,
               "error_rate": None if error_rate is None else round(error_rate, 4),
               "p50_ms": p50, "p99_ms": p99}
    if not evidence.loaded:
        return False, (f"the server did not load version {number} as the green within "
                       f"{release.deadline_s:g} s (it may not load; see the server's log)"), numbers
    if error_rate > release.max_green_error_rate:
        return False, (f"green failed {evidence.errors} of {total} checks ({error_rate:.1%} > "
                       f"{release.max_green_error_rate:.1%}): "
                       f"{'; '.join(evidence.error_samples)}"), numbers
    if answered < total:
        return False, (f"green answered {answered} of {total} checks as version {number} "
                       f"(others: {evidence.answered_by})"), numbers
    if p99 > release.max_green_p99_ms:
        return False, f"green p99 {p99} ms above {release.max_green_p99_ms:g} ms", numbers
    return True, (f"green answered {answered} of {total} checks at its version route, "
                  f"error rate {error_rate:.1%} <= {release.max_green_error_rate:.1%}, p99 "
                  f"{p99} ms <= {release.max_green_p99_ms:g} ms"), numbers
