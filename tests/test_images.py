"""The Dockerfiles, statically (no Docker engine here): each installs from a lock file of the repo
with compiled bytecode, runs as a non-root user, and pins its base image."""

import re
from pathlib import Path

import pytest

from ctloop.kfp import images

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?$")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def stages(path: Path) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, the global ARGs before the first FROM dropped."""
    found = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def base_images(path: Path) -> list[str]:
    """Each stage's base with ARG defaults substituted; bases named after a stage are left out."""
    defaults = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            defaults.setdefault(name, value)
    names, bases = set(), []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            image, *alias = rest.split(" AS ")
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image.strip())
            if image not in names:
                bases.append(image)
            names.update(a.strip() for a in alias)
    return bases


def test_the_three_images_exist():
    assert [p.name for p in DOCKERFILES] == [
        "pipeline-gpu.Dockerfile", "pipeline.Dockerfile", "serving.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_base_is_pinned(path):
    for base in base_images(path):
        # A Python patch release (optionally with its digest), or this project's own image at
        # this project's version.
        assert PINNED_PYTHON.match(base) or base == images.PIPELINE_IMAGE, base


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_stage_runs_as_a_non_root_user(path):
    users = [rest for keyword, rest in stages(path)[-1] if keyword == "USER"]
    assert users, f"{path.name}: no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{path.name}: runs as {users[-1]}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_installs_from_a_lock_file_of_the_repo_with_compiled_bytecode(path):
    copied = [rest.split()[0] for keyword, rest in instructions(path) if keyword == "COPY"
              and rest.split()[0].startswith("locks/")]
    assert len(copied) == 1, f"{path.name}: expected one lock file, copies {copied}"
    lock = ROOT / copied[0]
    assert lock.exists() and "uv pip compile pyproject.toml" in lock.read_text().splitlines()[1]
    installs = [rest for keyword, rest in instructions(path) if keyword == "RUN"
                and re.search(r"uv pip (sync|install) .*/tmp/lock\.txt", rest)]
    assert installs and all("--compile-bytecode" in run for run in installs), path.name
    assert all("--no-deps" in rest for keyword, rest in instructions(path)
               if keyword == "RUN" and "/src" in rest), "the project installs without deps"


def _pins(lock: Path) -> dict[str, str]:
    return dict(line.split("==") for line in lock.read_text().splitlines()
                if re.match(r"^[a-z0-9]", line))


def test_gpu_lock_is_the_cpu_lock_plus_nvidia_wheels_only():
    cpu, gpu = _pins(ROOT / "locks/pipeline.txt"), _pins(ROOT / "locks/pipeline-gpu.txt")
    assert {name: gpu[name] for name in cpu} == cpu
    added = set(gpu) - set(cpu)
    assert added and all(name.startswith("nvidia-") for name in added), sorted(added)
    assert cpu["tensorflow"] == "2.16.2"


def test_serving_image_runs_ctloop_serve_on_8080():
    serving = dict(instructions(ROOT / "docker/serving.Dockerfile"))
    assert serving["ENTRYPOINT"] == '["ctloop", "serve"]'
    assert serving["EXPOSE"] == "8080" and '"--port", "8080"' in serving["CMD"]


def test_dockerignore_keeps_exactly_what_the_dockerfiles_copy():
    kept = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
            if line.startswith("!")}
    copied = {Path(source).parts[0] for path in DOCKERFILES
              for keyword, rest in instructions(path) if keyword == "COPY"
              and not rest.startswith("--from") for source in rest.split()[:-1]}
    assert copied == kept
