"""The repository's Dockerfiles and their build contexts, checked without a Docker engine: the backend's
(Dockerfile) and the vLLM service's (Dockerfile.vllm), each test run over both.

Docker's own Dockerfile parser (the `dockerfile` package wraps moby/buildkit's), hadolint, and the
Docker SDK's implementation of .dockerignore, which decides what the engine would send as build context
(BuildKit reads `<Dockerfile>.dockerignore` instead of `.dockerignore` where it exists).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dockerfile
import pytest
from docker.utils.build import exclude_paths

from tests.support.compose import PINNED_TAG, ROOT, SECRET_NAME, render
from tests.support.healthchecks import BASE_IMAGE_TOOLS, executables

# What differs between the two images: the base they must build on, and the programs their healthcheck may
# call (the vLLM image: Python 3 and vllm, read from its Dockerfile at the pinned tag; tests/deploy/test_compose.py).
VLLM_BASE = "vllm/vllm-openai:v0.32.0"
DOCKERFILES = {
    "Dockerfile": {"base": lambda image: "slim" in image, "tools": BASE_IMAGE_TOOLS["python"]},
    "Dockerfile.vllm": {"base": lambda image: image == VLLM_BASE, "tools": {"python3", "vllm", "bash", "sh"}},
}
# What must never be in a build context: env files, keys, local data and venvs, git metadata.
PLANTED_SECRETS = [
    ".env", ".env.vllm", ".env.local", "backend/.env", "docs/.env.production", "data/qdrant-edge/segment.bin",
    "data/backend.json", ".venv/bin/python", ".venv-vllm/bin/python", ".cache/smollm2/model.safetensors",
    "certs/tls.key", "backend/tls.pem", ".git/config", ".gpu/p0/part0", "backend/__pycache__/app.cpython-311.pyc",
]


@pytest.fixture(scope="module", params=sorted(DOCKERFILES))
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def instructions(name):
    return dockerfile.parse_file(str(ROOT / name))


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


def test_hadolint_finds_nothing(name):
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), "--no-color", str(ROOT / name)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_images_are_pinned_and_the_build_is_multi_stage(name, instructions):
    defaults = arg_defaults(instructions)
    names = set()
    froms = [i for i in instructions if i.cmd == "FROM"]
    assert len(froms) >= 2, "multi-stage: build tools stay out of the runtime image"
    for instruction in froms:
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], instruction.value[0])
        if image not in names:
            assert PINNED_TAG.match(image), f"FROM {image} is not pinned to a version"
            assert DOCKERFILES[name]["base"](image), f"{name}: FROM {image} is not the base this image builds on"
        if len(instruction.value) == 3:
            names.add(instruction.value[2])


def test_runtime_stage_runs_as_non_root_with_a_working_healthcheck(name, instructions):
    runtime = stages(instructions)[-1]
    users = [i.value[0] for i in runtime if i.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}, "the runtime image must not run as root"
    (check,) = [i for i in runtime if i.cmd == "HEALTHCHECK"]
    assert executables(list(check.value)) <= DOCKERFILES[name]["tools"]
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


def build_context(root: Path, name: str) -> set[str]:
    ignore = ROOT / f"{name}.dockerignore"
    ignore = ignore if ignore.exists() else ROOT / ".dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return set(exclude_paths(str(root), patterns, dockerfile=name))


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


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context(name, context_tree):
    context = build_context(context_tree, name)
    leaked = [p for p in PLANTED_SECRETS if p in context]
    assert not leaked, f"these would be sent to the Docker engine (and could be COPY'd into an image): {leaked}"
    assert not any(p.startswith("tests/") for p in context)


def test_everything_the_dockerfile_copies_is_in_the_context(name, context_tree, instructions):
    context = build_context(context_tree, name)
    for instruction in instructions:
        if instruction.cmd == "COPY" and not any(f.startswith("--from=") for f in instruction.flags):
            for source in instruction.value[:-1]:
                assert source in context, f"{instruction.original}: {source} is excluded by .dockerignore"


# --- the vLLM image and the places that must agree with it ----------------------------------------------


def test_the_vllm_image_matches_the_stack_and_the_cluster():
    """One pinned vLLM version, one cache path, one uid: Dockerfile.vllm, the compose stack (which builds it),
    the replicas overlay and the k8s Deployment (which runs the upstream image as uid 1000)."""
    import yaml

    instructions = dockerfile.parse_file(str(ROOT / "Dockerfile.vllm"))
    defaults = arg_defaults(instructions)
    assert defaults["VLLM_IMAGE"] == VLLM_BASE
    runtime = stages(instructions)[-1]
    env = dict(zip(*[iter(next(i for i in runtime if i.cmd == "ENV").value)] * 2))
    (user,) = [i.value[0] for i in runtime if i.cmd == "USER"]
    assert [i.value for i in runtime if i.cmd == "ENTRYPOINT"] == [("vllm", "serve")]
    # The prefetch: a build arg (empty = none) and the token as a build secret, read in the RUN that needs it.
    prefetch = stages(instructions)[0]
    assert ("MODEL=" in [i.value[0] for i in prefetch if i.cmd == "ARG"])
    (download,) = [i for i in prefetch if i.cmd == "RUN" and "snapshot_download" in i.value[0]]
    assert "--mount=type=secret,id=hf_token,required=false" in download.flags
    copy = [i for i in runtime if i.cmd == "COPY"]
    assert [(c.flags, c.value) for c in copy] == [(("--from=prefetch", "--chown=1000:1000"), (env["HF_HOME"], env["HF_HOME"]))]

    for files in (["docker-compose.vllm.yml"], ["docker-compose.vllm.yml", "docker-compose.vllm-replicas.yml"]):
        services = render(files, ROOT / ".env.vllm")["services"]
        for service in ("vllm", "vllm-1") if len(files) == 2 else ("vllm",):
            vllm = services[service]
            assert vllm["build"]["dockerfile"] == "Dockerfile.vllm" and vllm["image"] == "rag-appliance-vllm:0.32.0"
            assert vllm["build"]["secrets"] == [{"source": "hf_token"}] and "HF_TOKEN" not in vllm["build"].get("args", {})
            assert vllm["environment"]["HF_HOME"] == env["HF_HOME"]
            cache = next(v for v in vllm["volumes"] if v["type"] == "volume")
            assert (cache["source"], cache["target"]) == ("hf-cache", env["HF_HOME"])
            assert any(v["target"] == "/models" and v["read_only"] for v in vllm["volumes"])

    deployment = yaml.safe_load((ROOT / "k8s/base/vllm/deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == VLLM_BASE
    assert f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}" == user == "1000:1000"
    k8s_env = {e["name"]: e.get("value") for e in container["env"]}
    assert k8s_env["HF_HOME"] == env["HF_HOME"]
