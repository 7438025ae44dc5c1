"""A model server that follows one stage of a registry (``RegistryModel``): the stage's serving
version, a canary taking a share of requests, and a shadow seeing every served request without
answering any client (``ctloop.serving.shadow``), are loaded in the background and swapped in by
reference, so requests in flight finish on the model they started with and none is dropped.

Blue-green uses the same pieces: the "green" is the stage's SHADOW pointer (loaded, no client
traffic; the registry's canary takes 1..100 % and has no 0 % form), checked by requests
addressed to its version (``/v2/models/<name>/versions/<v>/infer``); promoting it moves the
serving pointer, and the server swaps the loaded green in by reference. The version that served
before stays loaded ("warm") for ``warm_s``: a rollback to it (the pointer back) is a swap too,
with no reload (``loads`` counts the real ones).

Whatever the registry holds meanwhile (a pointer no one can read, a version that does not load,
a store that does not answer), the model in hand keeps serving: the follower logs why once per
change, counts the polls that did not follow on ``/metrics`` (``ctloop_registry_follow_*``),
and follows again as soon as the registry makes sense.

Only the serving environment (kserve, TF) imports this module.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

import numpy as np

from ctloop.errors import ConfigError, CtloopError, ModelError, RegistryError
from ctloop.registry import PRODUCTION, STAGES, Version, open_registry
from ctloop.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_POLL_S, DEFAULT_WARM_S
from ctloop.serving.kserve_api import logger
from ctloop.serving.model import Batch, CtloopModel, Loaded, load_model, score
from ctloop.serving.shadow import ShadowRunner


class RegistryModel(CtloopModel):
    """Serves one stage of a registry and follows that stage's pointers (see the module).

    Args:
        name: The registered model name (also the name in request paths).
        registry_uri: The registry: a folder, or ``s3://BUCKET[/PREFIX]``.
        max_batch: The most rows one request may carry.
        poll_s: How often the registry's pointers are read.
        seed: Seed of the canary routing draw (None: from the OS).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (MinIO,
            SeaweedFS); None for boto3's own configuration.
        stage: The stage whose pointers this server follows (``ctloop.registry.STAGES``): one
            ``ctloop serve`` per stage.
        warm_s: After the serving pointer moves, the previous version stays loaded this long,
            so a rollback to it is a swap by reference, not a reload (0: dropped at once).
        shadow: Runs the shadow's requests (None: a default ``ShadowRunner``).
    """

    def __init__(self, name: str, registry_uri: str | os.PathLike[str],
                 max_batch: int = DEFAULT_MAX_BATCH, poll_s: float = DEFAULT_POLL_S,
                 seed: int | None = None, s3_endpoint_url: str | None = None,
                 stage: str = PRODUCTION, warm_s: float = DEFAULT_WARM_S,
                 shadow: ShadowRunner | None = None):
        super().__init__(name, None, max_batch)
        if stage not in STAGES:
            raise ConfigError(f"stage {stage!r} is not one of {list(STAGES)}; pass one of them")
        if not warm_s >= 0:
            raise ConfigError(f"warm seconds {warm_s} is invalid: use 0 or more")
        self.registry = open_registry(str(registry_uri), name, s3_endpoint_url)
        self.stage = stage
        self.poll_s = poll_s
        self.warm_s = warm_s
        self._canary: tuple[Loaded, int] | None = None
        self._shadow: Loaded | None = None
        # Versions that served before, kept loaded until their deadline (time.monotonic()).
        self._warm: dict[str, tuple[Loaded, float]] = {}
        self.shadow_runner = shadow or ShadowRunner(score)
        self._draw = random.Random(seed)
        self.loads = 0  # versions loaded from the registry (a swap to a loaded one is none)
        self.failures = 0  # polls that did not follow the registry
        self.problem: str | None = None  # why the last poll did not; None: it did

    @property
    def source(self) -> str:
        return (f"registry {self.registry.uri}, stage {self.stage} (following it every "
                f"{self.poll_s:g} s)")

    @property
    def serving_version(self) -> str | None:
        return self._current.version if self._current else None

    @property
    def canary_version(self) -> str | None:
        return self._canary[0].version if self._canary else None

    @property
    def shadow_version(self) -> str | None:
        return self._shadow.version if self._shadow else None

    def load(self) -> bool:
        if self.registry.serving(stage=self.stage) is None:
            raise RegistryError(
                f"registry {self.registry.uri} has no serving version of {self.name!r} in "
                f"stage {self.stage}; run the pipeline first to train and push one, or check "
                "the registry path, model name and stage")
        self.sync()
        threading.Thread(target=self._follow, name="registry-follower", daemon=True).start()
        self.ready = True
        return self.ready

    def route(self) -> Loaded:
        canary = self._canary
        if canary and self._draw.random() * 100 < canary[1]:
            return canary[0]
        return self._current

    def addressable(self, version: str) -> Loaded | None:
        """The loaded model of ``version`` if requests may address it: the serving one, the
        canary, the shadow (blue-green's "green": loaded, no client traffic) or one kept
        warm; None for any other."""
        now = time.monotonic()
        held = [self._current, self._canary[0] if self._canary else None, self._shadow,
                *(loaded for loaded, until in list(self._warm.values()) if until > now)]
        return next((m for m in held if m is not None and m.version == version), None)

    def observe(self, batch: Batch, answers: np.ndarray) -> None:
        # Only what the serving model answered a client goes to the shadow: not a canary's
        # answer, not a check addressed to a version.
        shadow, target = self._shadow, batch.target
        if (shadow is not None and target is self._current and not batch.addressed
                and shadow.version != target.version):
            self.shadow_runner.submit(shadow, batch.columns, answers, target.version)

    def release_status(self) -> dict[str, Any]:
        now = time.monotonic()
        shadow = self.shadow_runner.stats
        return {
            "model": self.name,
            "stage": self.stage,
            "serving": self.serving_version,
            "canary": ({"version": self._canary[0].version, "percent": self._canary[1]}
                       if self._canary else None),
            "shadow": shadow.as_dict() if self._shadow and shadow.version == self._shadow.version
            else None,
            "shadow_queue": self.shadow_runner.max_queue,
            "warm": [{"version": version, "seconds_left": round(until - now, 1)}
                     for version, (_, until) in sorted(self._warm.items()) if until > now],
            "warm_s": self.warm_s,
            "loads": self.loads,
            "following": self.problem is None,
            "problem": self.problem,
        }

    def sync(self) -> None:
        """Loads what the stage's pointers name now, if it is not loaded yet: a version loaded
        already (the green, the canary, one kept warm) is swapped in by reference.

        Raises:
            CtloopError: The registry cannot be read, or a version it names does not load.
        """
        serving = self.registry.serving(stage=self.stage)
        if serving and (self._current is None or self._current.version != str(serving.number)):
            previous, self._current = self._current, self._loaded(serving)
            self._warm.pop(self._current.version, None)
            logger.info("%s serves version %d of %r", self.stage, serving.number, self.name)
            if previous is not None and self.warm_s > 0:
                self._warm[previous.version] = (previous, time.monotonic() + self.warm_s)
                logger.info("version %s kept warm for %g s (a rollback to it needs no reload)",
                            previous.version, self.warm_s)
        now = time.monotonic()
        for version, (_, until) in list(self._warm.items()):
            if until <= now:
                del self._warm[version]
                logger.info("version %s no longer kept warm", version)
        canary = self.registry.canary(stage=self.stage)
        if canary is None:
            if self._canary:
                logger.info("canary version %s ended", self._canary[0].version)
            self._canary = None
        elif self._canary is None or (self._canary[0].version, self._canary[1]) != (
                str(canary[0].number), canary[1]):
            self._canary = (self._loaded(canary[0]), canary[1])
            logger.info("canary version %d takes %d%% of requests", canary[0].number, canary[1])
        shadow = self.registry.shadow(stage=self.stage)
        if shadow is None:
            if self._shadow:
                logger.info("shadow version %s ended: %s", self._shadow.version,
                            self.shadow_runner.stats.as_dict())
            self._shadow = None
        elif self._shadow is None or self._shadow.version != str(shadow.number):
            loaded = self._loaded(shadow)
            self.shadow_runner.reset(loaded.version)
            self._shadow = loaded
            logger.info("shadow version %d sees the requests of %s's serving version %s",
                        shadow.number, self.stage, self.serving_version)

    def poll(self) -> None:
        """One step of following: ``sync``, and note how it went. Never raises: whatever went
        wrong, what is loaded keeps serving; the reason is logged when it changes."""
        try:
            self.sync()
        except Exception as exc:  # noqa: BLE001 - any failure: keep serving the model in hand
            self.failures += 1
            problem = _one_line(exc)
            if problem != self.problem:
                logger.error("registry %s not followed: %s; still serving version %s%s",
                             self.registry.uri, problem, self.serving_version,
                             f" (canary: version {self.canary_version})" if self._canary else "")
            self.problem = problem
        else:
            if self.problem is not None:
                logger.info("registry %s followed again: serving version %s",
                            self.registry.uri, self.serving_version)
            self.problem = None

    def _loaded(self, version: Version) -> Loaded:
        """``version``'s model: the one already loaded (serving, canary, shadow, warm) if any,
        else loaded now."""
        wanted = str(version.number)
        held = [self._current, self._canary[0] if self._canary else None, self._shadow,
                *(loaded for loaded, _ in self._warm.values())]
        found = next((m for m in held if m is not None and m.version == wanted), None)
        return found if found is not None else self._load(version)

    def _load(self, version: Version) -> Loaded:
        try:
            loaded = load_model(version.model_dir, str(version.number))
        except CtloopError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF's loader raises far more than it documents
            raise ModelError(
                f"version {version.number} of {self.name!r} does not load ({_one_line(exc)}); "
                "push a version exported by ctloop's trainer, or point serving at one that "
                "loads") from exc
        self.loads += 1
        logger.info("loaded version %d of %r (%d loads)", version.number, self.name, self.loads)
        return loaded

    def _follow(self) -> None:
        while True:
            time.sleep(self.poll_s)
            self.poll()


def export_metrics(model: RegistryModel) -> None:
    """How following goes, and the shadow's counts, as Prometheus metrics on ``/metrics``."""
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class _Following:
        def collect(self):
            yield CounterMetricFamily(
                "ctloop_registry_follow_failures", "Polls of the registry that did not follow "
                "it; the model in hand kept serving (the log says why)", value=model.failures)
            yield GaugeMetricFamily(
                "ctloop_registry_follow_failing", "1 while the last poll of the registry did "
                "not follow it, else 0", value=int(model.problem is not None))
            yield CounterMetricFamily(
                "ctloop_model_loads", "Versions loaded from the registry (a switch to a version "
                "already loaded, e.g. a rollback to one kept warm, loads none)",
                value=model.loads)
            for role in ("serving", "canary", "shadow"):
                version = getattr(model, f"{role}_version")
                if version is not None and version.isdigit():
                    yield GaugeMetricFamily(f"ctloop_{role}_version",
                                            f"The registry version loaded as the {role} model",
                                            value=int(version))
            stats = model.shadow_runner.stats
            for name, value, what in (
                    ("compared", stats.compared, "Requests run through the shadow and compared"),
                    ("agreed", stats.agreed, "Compared requests where every row agreed"),
                    ("errors", stats.errors, "Requests the shadow failed to answer"),
                    ("dropped", stats.dropped, "Requests not run through the shadow: its queue "
                     "was full (the client's request was not slowed)")):
                yield CounterMetricFamily(f"ctloop_shadow_{name}",
                                          f"{what} (the current shadow version's)", value=value)

    REGISTRY.register(_Following())


def _one_line(exc: BaseException) -> str:
    """A CtloopError's message (one line already); any other error's type and first line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first if isinstance(exc, CtloopError) else f"{type(exc).__name__}: {first}".rstrip(": ")
