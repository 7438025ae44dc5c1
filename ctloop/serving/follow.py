"""A model server that follows a registry (``RegistryModel``): the serving version, and a
canary taking a share of requests, are loaded in the background and swapped in by reference, so
requests in flight finish on the model they started with and none is dropped.

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

from ctloop.errors import CtloopError, ModelError, RegistryError
from ctloop.registry import Version, open_registry
from ctloop.serving.defaults import DEFAULT_MAX_BATCH, DEFAULT_POLL_S
from ctloop.serving.kserve_api import logger
from ctloop.serving.model import CtloopModel, Loaded, load_model


class RegistryModel(CtloopModel):
    """Serves a registry's serving version and follows it (see the module).

    Args:
        name: The registered model name (also the name in request paths).
        registry_uri: The registry: a folder, or ``s3://BUCKET[/PREFIX]``.
        max_batch: The most rows one request may carry.
        poll_s: How often the registry's pointers are read.
        seed: Seed of the canary routing draw (None: from the OS).
        s3_endpoint_url: The S3-compatible endpoint of an ``s3://`` registry (MinIO,
            SeaweedFS); None for boto3's own configuration.
    """

    def __init__(self, name: str, registry_uri: str | os.PathLike[str],
                 max_batch: int = DEFAULT_MAX_BATCH, poll_s: float = DEFAULT_POLL_S,
                 seed: int | None = None, s3_endpoint_url: str | None = None):
        super().__init__(name, None, max_batch)
        self.registry = open_registry(str(registry_uri), name, s3_endpoint_url)
        self.poll_s = poll_s
        self._canary: tuple[Loaded, int] | None = None
        self._draw = random.Random(seed)
        self.failures = 0  # polls that did not follow the registry
        self.problem: str | None = None  # why the last poll did not; None: it did

    @property
    def source(self) -> str:
        return f"registry {self.registry.uri} (following it every {self.poll_s:g} s)"

    @property
    def serving_version(self) -> str | None:
        return self._current.version if self._current else None

    @property
    def canary_version(self) -> str | None:
        return self._canary[0].version if self._canary else None

    def load(self) -> bool:
        if self.registry.serving() is None:
            raise RegistryError(
                f"registry {self.registry.uri} has no serving version of {self.name!r}; run the "
                "pipeline first to train and push one, or check the registry path and model name"
            )
        self.sync()
        threading.Thread(target=self._follow, name="registry-follower", daemon=True).start()
        self.ready = True
        return self.ready

    def route(self) -> Loaded:
        canary = self._canary
        if canary and self._draw.random() * 100 < canary[1]:
            return canary[0]
        return self._current

    def sync(self) -> None:
        """Loads what the registry's pointers name now, if it is not loaded yet.

        Raises:
            CtloopError: The registry cannot be read, or a version it names does not load.
        """
        serving = self.registry.serving()
        if serving and (self._current is None or self._current.version != str(serving.number)):
            self._current = self._load(serving)
            logger.info("serving version %d of %r", serving.number, self.name)
        canary = self.registry.canary()
        if canary is None:
            if self._canary:
                logger.info("canary version %s ended", self._canary[0].version)
            self._canary = None
        elif self._canary is None or (self._canary[0].version, self._canary[1]) != (
                str(canary[0].number), canary[1]):
            loaded = (self._current if self._current.version == str(canary[0].number)
                      else self._load(canary[0]))
            self._canary = (loaded, canary[1])
            logger.info("canary version %d takes %d%% of requests", canary[0].number, canary[1])

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

    def _load(self, version: Version) -> Loaded:
        try:
            return load_model(version.model_dir, str(version.number))
        except CtloopError:
            raise
        except Exception as exc:  # noqa: BLE001 - TF's loader raises far more than it documents
            raise ModelError(
                f"version {version.number} of {self.name!r} does not load ({_one_line(exc)}); "
                "push a version exported by ctloop's trainer, or point serving at one that "
                "loads") from exc

    def _follow(self) -> None:
        while True:
            time.sleep(self.poll_s)
            self.poll()


def export_metrics(model: RegistryModel) -> None:
    """How following goes, as Prometheus metrics on the server's ``/metrics``."""
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
            for role in ("serving", "canary"):
                version = getattr(model, f"{role}_version")
                if version is not None and version.isdigit():
                    yield GaugeMetricFamily(f"ctloop_{role}_version",
                                            f"The registry version loaded as the {role} model",
                                            value=int(version))

    REGISTRY.register(_Following())


def _one_line(exc: BaseException) -> str:
    """A CtloopError's message (one line already); any other error's type and first line."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first if isinstance(exc, CtloopError) else f"{type(exc).__name__}: {first}".rstrip(": ")
