"""What a model version was made from, beyond its data and parameters: the code and the
environment, each as a digest that is the same wherever the same thing ran.

- ``code``: SHA-256 over ctloop's Python sources (the library, its components and pipelines; not
  tests), by module path, so an editable checkout and an image built from the same commit agree.
- ``environment``: SHA-256 over the installed distributions as sorted ``name==version`` lines
  (ctloop itself left out). ``lock_digest`` computes the same over a lock file, so a record says
  whether the run's environment was exactly a lock's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import re
from pathlib import Path
from typing import Any

# The versions worth reading in a record at a glance; the digest covers every package.
KEY_PACKAGES = ("tensorflow", "keras", "tensorflow-data-validation",
                "tensorflow-model-analysis", "apache-beam", "kfp")
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def normalize(name: str) -> str:
    """A distribution name in PEP 503 form (``Tensorflow_Data.Validation`` ->
    ``tensorflow-data-validation``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements_digest(pins: dict[str, str]) -> str:
    """SHA-256 over sorted ``name==version`` lines; ``ctloop`` itself is left out."""
    lines = sorted(f"{normalize(n)}=={v}" for n, v in pins.items() if normalize(n) != "ctloop")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def lock_digest(lock_file: str | Path) -> str:
    """``requirements_digest`` of a ``uv pip compile`` lock file's pins."""
    pins = {}
    for line in Path(lock_file).read_text().splitlines():
        if match := _REQUIREMENT.match(line.strip()):
            pins[match.group(1)] = match.group(2)
    return requirements_digest(pins)


def installed() -> dict[str, str]:
    """Every installed distribution of this interpreter: normalized name -> version."""
    found = {}
    for distribution in importlib.metadata.distributions():
        name, version = _name_and_version(distribution)
        if name:
            found[normalize(name)] = version
    return found


def _name_and_version(distribution: importlib.metadata.Distribution) -> tuple[str, str]:
    """The ``Name`` and ``Version`` of a distribution's core metadata, read from its header
    lines (``Distribution.metadata`` parses the whole file, descriptions included: several
    times slower over a few hundred distributions)."""
    text = distribution.read_text("METADATA") or distribution.read_text("PKG-INFO") or ""
    fields = {}
    for line in text.splitlines():
        if not line:
            break  # the end of the headers
        key, _, value = line.partition(":")
        if key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields.get("Name", ""), fields.get("Version", "")


def code_digest(packages: dict[str, Path] | None = None) -> str:
    """SHA-256 over the ``*.py`` files of ``packages`` (dotted name -> folder; default: ctloop
    and its ``components`` and ``pipelines`` packages), keyed by module path, so an editable
    checkout (where those two live beside ``ctloop/``) and an installed wheel (where they live
    inside it) agree. ``tests`` folders and caches are left out."""
    if packages is None:
        import importlib.util

        # Located, not imported: the core has no import of its components or pipelines.
        packages = {name: Path(folder) for name in ("ctloop", "ctloop.components",
                                                    "ctloop.pipelines")
                    for folder in importlib.util.find_spec(name).submodule_search_locations}
    files = {}
    for name, root in packages.items():
        for path in root.rglob("*.py"):
            relative = path.relative_to(root)
            if not {"tests", "__pycache__"} & set(relative.parts):
                files["/".join([*name.split("."), *relative.parts])] = path
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(f"{key}\0".encode())
        digest.update(files[key].read_bytes())
    return digest.hexdigest()


def provenance() -> dict[str, Any]:
    """The code and environment of this process, for a model version's run record."""
    from ctloop import __version__

    packages = installed()
    return {
        "code": {"ctloop_version": __version__, "digest": code_digest()},
        "environment": {
            "python": platform.python_version(),
            "digest": requirements_digest(packages),
            "packages": {name: packages.get(name) for name in KEY_PACKAGES},
        },
    }
