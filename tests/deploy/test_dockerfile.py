"""The backend's Dockerfile and build context, checked without a Docker engine.

Docker's own Dockerfile parser (the `dockerfile` package wraps moby/buildkit's), hadolint, and the
Docker SDK's implementation of .dockerignore, which decides what the engine would send as build context.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
from docker.utils.build import exclude_paths

from tests.support.compose import PINNED_TAG, ROOT, SECRET_NAME
from tests.support.healthchecks import BASE_IMAGE_TOOLS, executables

DOCKERFILE = ROOT / "Dockerfile"
# What must never be in a build context: env files, keys, local data and venvs, git metadata.
PLANTED_SECRETS = [
    ".env", ".env.vllm", ".env.local", "backend/.env", "docs/.env.production", "data/qdrant-edge/segment.bin",
    "data/backend.json", ".venv/bin/python", ".venv-vllm/bin/python", ".cache/smollm2/model.safetensors",
    "certs/tls.key", "backend/tls.pem", ".git/config", ".gpu/p0/part0", "backend/__pycache__/app.cpython-311.pyc",
]


@pytest.fixture(scope="module")
def instructions():
    return dockerfile.parse_file(str(DOCKERFILE))


def stages(instructions) -> list[list]:
    result: list[list] = []
    for instruction in instructions:
        if instruction.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def arg_defaults(instructions) -> dict[str, str]:
    return dict(i.value[0].split("=", 1) for i in instructions if i.cmd == "ARG" and "=" in i.value[0])


def test_hadolint_finds_nothing():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_images_are_pinned_and_the_build_is_multi_stage(instructions):
    defaults = arg_defaults(instructions)
    names = set()
    froms = [i for i in instructions if i.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the runtime image"
    for instruction in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], instruction.value[0])
        if image not in names:
            assert PINNED_TAG.match(image), f"FROM {image} is not pinned to a version"
            assert "slim" in image, "the backend builds on a slim base"
        if len(instruction.value) == 3:
            names.add(instruction.value[2])


def test_runtime_stage_runs_as_non_root_with_a_working_healthcheck(instructions):
    runtime = stages(instructions)[-1]
    users = [i.value[0] for i in runtime if i.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the runtime image must not run as root"
    (check,) = [i for i in runtime if i.cmd == "HEALTHCHECK"]
    assert executables(list(check.value)) <= BASE_IMAGE_TOOLS["python"]
    assert not any(i.cmd == "RUN" and re.search(r"\b(pip|apt-get)\b", i.value[0]) for i in runtime), (
        "installs belong in the build stage"
    )


def test_no_secret_is_baked_into_the_image(instructions):
    for instruction in instructions:
        if instruction.cmd in {"ENV", "ARG"}:
            names = instruction.value[::2] if instruction.cmd == "ENV" else [v.split("=")[0] for v in instruction.value]
            leaked = [n for n in names if SECRET_NAME.search(n)]
            assert not leaked, f"{instruction.original}: secrets come at run time, never from the image"
        if instruction.cmd in {"COPY", "ADD"}:
            sources = instruction.value[:-1]
            assert not any(re.search(r"(^|/)\.env|\.pem$|\.key$|^data\b", s) for s in sources), instruction.original
            assert not (instruction.cmd == "ADD" and any("://" in s for s in sources)), "ADD <url> is not reproducible"


def build_context(root: Path) -> set[str]:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")]
    return set(exclude_paths(str(root), patterns, dockerfile="Dockerfile"))


@pytest.fixture(scope="module")
def context_tree(tmp_path_factory) -> Path:
    """The repository's tracked files (empty copies) plus the secrets a user's checkout may hold."""
    root = tmp_path_factory.mktemp("context")
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for relative in tracked + PLANTED_SECRETS:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    return root


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context(context_tree):
    context = build_context(context_tree)
    leaked = [p for p in PLANTED_SECRETS if p in context]
    assert not leaked, f"these would be sent to the Docker engine (and could be COPY'd into an image): {leaked}"
    assert not any(p.startswith("tests/") for p in context)


def test_everything_the_dockerfile_copies_is_in_the_context(context_tree, instructions):
    context = build_context(context_tree)
    for instruction in instructions:
        if instruction.cmd == "COPY" and not any(f.startswith("--from=") for f in instruction.flags):
            for source in instruction.value[:-1]:
                assert source in context, f"{instruction.original}: {source} is excluded by .dockerignore"
