"""What a benchmark ran on: CPU, memory, OS, Python and the versions of the libraries measured."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PIPELINE_PACKAGES = ("tensorflow", "tensorflow-data-validation", "tensorflow-model-analysis",
                     "apache-beam", "pyarrow", "pandas", "kfp")
SERVING_PACKAGES = ("kserve", "tensorflow")


def info(serving_python: str | None) -> dict[str, Any]:
    """The machine and both environments' library versions."""
    return {
        "cpu_model": _first("/proc/cpuinfo", "model name"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(int(_first("/proc/meminfo", "MemTotal").split()[0]) / 1024 ** 2, 1),
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pipeline_env": {p: metadata.version(p) for p in PIPELINE_PACKAGES},
        "serving_env": _serving_versions(serving_python) if serving_python else None,
    }


def describe(machine: dict[str, Any]) -> str:
    """One line: CPU, cores, memory, OS, Python."""
    return (f"{machine['cpu_model']}, {machine['cpus_usable']} of {machine['cpu_count']} CPUs "
            f"usable, {machine['memory_gb']} GB RAM, {machine['os']}, Python "
            f"{machine['python']}")


def _first(path: str, key: str) -> str:
    for line in Path(path).read_text().splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return "unknown"


def _os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    except OSError:
        return platform.system()


def _serving_versions(serving_python: str) -> dict[str, str]:
    code = ("import json; from importlib import metadata; "
            f"print(json.dumps({{p: metadata.version(p) for p in {list(SERVING_PACKAGES)!r}}}))")
    return json.loads(subprocess.run([serving_python, "-c", code], check=True,
                                     capture_output=True, text=True).stdout)
