"""The compose stacks and env files, checked through the real Docker Compose binary (no engine needed).

What fails here: a file the compose specification rejects, an unpinned image, a healthcheck that calls a
tool its image lacks (or does not work at all), a service the backend waits for without a healthcheck, a
knob of an env file that reaches nothing, an env file that does not select its engine, a published port
nobody asked for, a long-running service without a restart policy or memory limit, and two stacks that
cannot run side by side.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.settings import Settings, load_settings
from tests.support.compose import (
    PINNED_TAG,
    ROOT,
    SECRET_NAME,
    STACKS,
    compose,
    read_env_file,
    stack_render,
    write_env_file,
)
from tests.support.healthchecks import BASE_IMAGE_TOOLS, executables, run_check
from cli.local_backend import free_port

# Executables each pinned image holds, read from its Dockerfile at that tag. A healthcheck may call only
# these; a new image needs its line here (after reading its Dockerfile), or the test fails.
IMAGE_TOOLS = {
    # qdrant/qdrant v1.19.0: FROM debian:13-slim; apt adds ca-certificates, tzdata, libunwind8 only; its
    # entrypoint.sh is a bash script. No curl, no wget (qdrant/qdrant#3491, #4250).
    "qdrant/qdrant": {"bash", "sh", "head", "grep", "cat", "timeout"},
    # ollama/ollama 0.32.15: FROM ubuntu:24.04; apt adds ca-certificates, libvulkan1, libopenblas0; the
    # ollama binary in /usr/bin. No curl, no wget (ollama/ollama#9781).
    "ollama/ollama": {"ollama", "/bin/ollama", "bash", "sh", "head", "grep", "cat"},
    # vllm/vllm-openai v0.32.0: CUDA Ubuntu image; Python 3 and the vllm package (the image's entrypoint).
    "vllm/vllm-openai": {"python3", "vllm", "bash", "sh"},
    # nginxinc/nginx-unprivileged 1.28.0-alpine: FROM alpine; busybox (sh, wget), nginx, envsubst (gettext).
    "nginxinc/nginx-unprivileged": {"nginx", "sh", "wget", "envsubst"},
}
# Images built here, by their Dockerfile's base-image ARG: the final stage's base decides what a check may call.
BUILT_IMAGE_BASES = {"Dockerfile": "PYTHON_IMAGE", "Dockerfile.vllm": "VLLM_IMAGE"}

# A different valid value for every key of both env files: each must change the rendered project (a knob
# that changes nothing is not wired). A new knob in an env file needs its line here.
ALTERNATIVES = {
    "COMPOSE_PROFILES": {"vllm": "", "ollama": "gpu"},
    "VLLM_MODEL": "mistralai/Mistral-7B-Instruct-v0.3",
    "VLLM_SERVED_MODEL_NAME": "mistral-7b",
    "VLLM_GPU_MEMORY_UTILIZATION": "0.8",
    "VLLM_MAX_MODEL_LEN": "4096",
    "VLLM_TENSOR_PARALLEL_SIZE": "2",
    "VLLM_PIPELINE_PARALLEL_SIZE": "2",
    "VLLM_MAX_NUM_SEQS": "64",
    "VLLM_QUANTIZATION": "awq",
    "VLLM_DTYPE": "bfloat16",
    "VLLM_API_KEY": "test-vllm-key",
    "VLLM_EXTRA_ARGS": "--enable-prefix-caching",
    "HF_TOKEN": "hf_test_token",
    "GPU_COUNT": "2",
    "SHM_SIZE_VLLM": "32g",
    "MEM_LIMIT_VLLM": "96g",
    "MEM_LIMIT_OLLAMA": "48g",
    "MEM_LIMIT_QDRANT": "16g",
    "MEM_LIMIT_BACKEND": "6g",
    "BACKEND_PORT": "9000",
    "BACKEND_BIND": "0.0.0.0",
    "MODELS_DIR": "/srv/models",
    "OLLAMA_MODEL": "qwen2.5:7b",
    "OLLAMA_NUM_CTX": "16384",
    "OLLAMA_KEEP_ALIVE": "5m",
    "OLLAMA_NUM_PARALLEL": "8",
    "OLLAMA_MAX_LOADED_MODELS": "2",
    "OLLAMA_FLASH_ATTENTION": "0",
    "LLM_TIMEOUT_S": "300",
    "ANSWER_MAX_TOKENS": "256",
    "ANSWER_TEMPERATURE": "0.3",
    "ASK_MIN_SCORE": "0.3",
    "CITATION_CHECK": "drop",
    "EMBED_MODEL": "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2",
    "EMBED_BACKEND": "torch",
    "CHUNK_TOKENS": "256",
    "SEARCH_MODE": "dense",
    "API_KEYS": "ops-0123456789abcdef=*",
    "FUSION": "rrf",
    "BM25_LANGUAGE": "english",
    "RERANK_MODEL": "/models/reranker",
    "CHUNK_OVERLAP": "32",
    "MAX_UPLOAD_MB": "100",
    "LOG_LEVEL": "debug",
    "PREFETCH_MODEL": "meta-llama/Llama-3.1-8B-Instruct",
    "TLS_CERT_DIR": "/etc/letsencrypt/live/rag.example.com",
    "HTTPS_PORT": "8443",
    "HTTP_PORT": "8080",
    # The GPU embedding service (profile gpu-embed); each is parsed by vLLM itself in test_vllm_args.py.
    "EMBED_VLLM_MODEL": "BAAI/bge-m3",
    "EMBED_SERVED_MODEL": "bge-m3",
    "EMBED_VLLM_GPU_MEMORY_UTILIZATION": "0.08",
    "EMBED_VLLM_MAX_MODEL_LEN": "8192",
    "EMBED_VLLM_DTYPE": "float16",
    "EMBED_VLLM_EXTRA_ARGS": "--max-num-batched-tokens 16384",
    "EMBED_GPU_ID": "1",
    "EMBED_API_KEY": "test-embed-key",
    "MEM_LIMIT_VLLM_EMBED": "12g",
}
# Names the Ollama daemon reads itself (envconfig/config.go at the pinned tag); these go to its container.
OLLAMA_DAEMON_VARIABLES = {
    "OLLAMA_KEEP_ALIVE", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_LOADED_MODELS",
    "OLLAMA_FLASH_ATTENTION", "OLLAMA_HOST", "OLLAMA_MAX_QUEUE", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_ORIGINS",
}
ONE_SHOT = "service_completed_successfully"


def settings_env_names() -> set[str]:
    return {(field.alias or name).upper() for name, field in Settings.model_fields.items()}


def env_file(stack: str) -> Path:
    return ROOT / STACKS[stack][1]


def image_tools(service: dict) -> set[str]:
    if "build" in service:
        name = service["build"].get("dockerfile", "Dockerfile")
        dockerfile = Path(service["build"]["context"]) / name
        bases = re.findall(rf"^ARG {BUILT_IMAGE_BASES[name]}=(\S+)", dockerfile.read_text(), re.M)
        assert bases, f"{name}: no default for its base image"
        if bases[0].startswith("python:"):
            return BASE_IMAGE_TOOLS["python"]
        repo = bases[0].rsplit(":", 1)[0]
        assert repo in IMAGE_TOOLS, f"{repo}: read its Dockerfile and list its tools in IMAGE_TOOLS"
        return IMAGE_TOOLS[repo]
    repo = service["image"].split("@")[0].rsplit(":", 1)[0]
    assert repo in IMAGE_TOOLS, f"{repo}: read its Dockerfile and list its tools in IMAGE_TOOLS"
    return IMAGE_TOOLS[repo]


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_env_file_selects_its_engine(stack):
    values = read_env_file(env_file(stack))
    assert values.get("LLM_BACKEND") == stack
    assert load_settings(env_file(stack)).llm_backend == stack
    assert stack_render(stack)["services"]["backend"]["environment"]["LLM_BACKEND"] == stack


def test_a_missing_engine_choice_is_an_error(tmp_path):
    values = read_env_file(env_file("vllm"))
    del values["LLM_BACKEND"]
    done = compose(["-f", "docker-compose.vllm.yml", "config"], write_env_file(tmp_path / "e", values))
    assert done.returncode != 0 and "LLM_BACKEND" in done.stderr


@pytest.mark.parametrize(
    "stack, profiles, expected",
    [
        ("vllm", None, {"qdrant", "vllm", "backend"}),
        ("vllm", "", {"qdrant", "backend"}),  # external vLLM
        ("vllm", "vllm,gpu-embed", {"qdrant", "vllm", "vllm-embed", "backend"}),  # embeddings on the GPU
        ("vllm", "gpu-embed", {"qdrant", "vllm-embed", "backend"}),  # external vLLM, embeddings here
        ("ollama", None, {"qdrant", "ollama", "ollama-pull", "backend"}),
        ("ollama", "gpu", {"qdrant", "ollama-gpu", "ollama-pull", "backend"}),
        ("ollama", "", {"qdrant", "backend"}),  # external Ollama
    ],
)
@pytest.mark.parametrize("ports", [False, True])
def test_stacks_validate_against_the_compose_specification(stack, profiles, expected, ports):
    environ = None if profiles is None else {"COMPOSE_PROFILES": profiles}
    project = stack_render(stack, environ, ports=ports)
    assert set(project["services"]) == expected
    assert project["name"] == f"rag-{stack}"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_images_are_pinned(stack):
    for name, service in stack_render(stack, {"COMPOSE_PROFILES": "gpu" if stack == "ollama" else "vllm,gpu-embed"})["services"].items():
        assert PINNED_TAG.match(service["image"]), f"{name}: image {service['image']!r} is not pinned to a version"
        assert not service["image"].endswith(":latest")


@pytest.mark.parametrize("stack, profiles", [("vllm", "vllm"), ("vllm", "vllm,gpu-embed"), ("ollama", "cpu"), ("ollama", "gpu")])
def test_healthchecks_use_only_tools_their_image_has(stack, profiles):
    services = stack_render(stack, {"COMPOSE_PROFILES": profiles})["services"]
    for name, service in services.items():
        check = service.get("healthcheck")
        if check is None:
            continue
        missing = executables(check["test"]) - image_tools(service)
        assert not missing, f"{name}: healthcheck runs {sorted(missing)}, which {service['image']} does not have"


@pytest.mark.parametrize(
    "stack, profiles", [("vllm", "vllm"), ("vllm", "vllm,gpu-embed"), ("vllm", "gpu-embed"), ("ollama", "cpu"), ("ollama", "gpu")]
)
def test_every_dependency_has_what_its_condition_needs(stack, profiles):
    services = stack_render(stack, {"COMPOSE_PROFILES": profiles})["services"]
    waited_on = set()
    for name, service in services.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            if dependency not in services:
                assert spec.get("required") is False, f"{name} needs {dependency}, which is not in the stack"
                continue
            waited_on.add(dependency)
            target = services[dependency]
            if spec["condition"] == "service_healthy":
                check = target.get("healthcheck") or {}
                assert check.get("test") and check["test"][0] != "NONE" and not check.get("disable"), (
                    f"{name} waits for {dependency} to be healthy, but it has no healthcheck"
                )
            else:
                assert spec["condition"] == ONE_SHOT and target.get("restart") in (None, "no")
    assert {"qdrant"} <= waited_on
    backend_needs = set(services["backend"]["depends_on"])
    assert {"qdrant"} <= backend_needs and (backend_needs & {"vllm", "ollama", "ollama-gpu"})


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_restart_policies_and_memory_limits(stack):
    profiles = "vllm,gpu-embed" if stack == "vllm" else "cpu"
    for name, service in stack_render(stack, {"COMPOSE_PROFILES": profiles})["services"].items():
        if name == "ollama-pull":
            assert service["restart"] == "no"
            continue
        assert service.get("restart") == "unless-stopped", name
        assert service["deploy"]["resources"]["limits"]["memory"], name


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_only_the_backend_is_published_by_default(stack):
    profiles = "vllm" if stack == "vllm" else "cpu"
    services = stack_render(stack, {"COMPOSE_PROFILES": profiles})["services"]
    published = {name: service["ports"] for name, service in services.items() if service.get("ports")}
    assert set(published) == {"backend"}
    (port,) = published["backend"]
    assert (port["published"], port["target"], port["host_ip"]) == ("8000", 8000, "127.0.0.1")
    # The opt-in override publishes the rest, on loopback only.
    opened = stack_render(stack, {"COMPOSE_PROFILES": profiles}, ports=True)["services"]
    extra = {name for name, service in opened.items() if service.get("ports")} - {"backend"}
    assert extra == ({"qdrant", "vllm"} if stack == "vllm" else {"qdrant", "ollama"})
    assert all(p["host_ip"] == "127.0.0.1" for name in extra for p in opened[name]["ports"])
    if stack == "vllm":  # the embedding service's port too, with its profile (and only then)
        embed = stack_render(stack, {"COMPOSE_PROFILES": "vllm,gpu-embed"}, ports=True)["services"]["vllm-embed"]
        assert [(p["host_ip"], p["published"], p["target"]) for p in embed["ports"]] == [("127.0.0.1", "8002", 8002)]


def test_both_stacks_run_side_by_side():
    """The A/B set-up of docs/deployment.md: Ollama's backend on 8000, vLLM's on 9000."""
    ollama = stack_render("ollama")
    vllm = stack_render("vllm", {"BACKEND_PORT": "9000"})
    assert ollama["name"] != vllm["name"]
    assert not {v["name"] for v in ollama["volumes"].values()} & {v["name"] for v in vllm["volumes"].values()}

    def host_ports(project):
        return {p["published"] for s in project["services"].values() for p in s.get("ports", [])}

    assert host_ports(ollama) == {"8000"} and host_ports(vllm) == {"9000"}


def test_external_vllm_by_configuration_alone():
    project = stack_render("vllm", {"COMPOSE_PROFILES": "", "VLLM_BASE_URL": "http://gpu-1:8001/v1"})
    assert "vllm" not in project["services"]
    assert project["services"]["backend"]["environment"]["VLLM_BASE_URL"] == "http://gpu-1:8001/v1"
    bundled = stack_render("vllm")["services"]["backend"]["environment"]
    assert bundled["VLLM_BASE_URL"] == "http://vllm:8001/v1" and bundled["QDRANT_URL"] == "http://qdrant:6333"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_backend_setting_reaches_the_backend(stack):
    environment = stack_render(stack)["services"]["backend"]["environment"]
    assert settings_env_names() <= set(environment), "settings the compose files do not pass to the backend"


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_every_knob_of_the_env_file_changes_the_deployment(stack):
    values = read_env_file(env_file(stack))
    unknown = set(values) - set(ALTERNATIVES) - {"LLM_BACKEND"}
    assert not unknown, f"knobs without an entry in ALTERNATIVES (so their wiring is untested): {unknown}"
    everything = {"COMPOSE_PROFILES": "*"}  # every service, so a knob of a profile's service counts too
    baseline = stack_render(stack, everything)
    backend_names = settings_env_names()
    for key, value in values.items():
        if key == "LLM_BACKEND":
            continue
        alternative = ALTERNATIVES[key][stack] if isinstance(ALTERNATIVES[key], dict) else ALTERNATIVES[key]
        assert alternative != value, key
        if key == "COMPOSE_PROFILES":
            changed, baseline_here = stack_render(stack, {key: alternative}), stack_render(stack)
        else:
            changed, baseline_here = stack_render(stack, {**everything, key: alternative}), baseline
        assert changed != baseline_here, f"{key}={alternative!r} changes nothing: the knob is not wired"
        assert changed != baseline, f"{key}={alternative!r} changes nothing: the knob is not wired"
        # Where it must land
        if key in backend_names:
            assert changed["services"]["backend"]["environment"][key] == alternative, key
        if stack == "ollama" and key in OLLAMA_DAEMON_VARIABLES:
            assert changed["services"]["ollama"]["environment"][key] == alternative, key


def test_ollama_knobs_reach_the_daemon_and_the_pull_step():
    project = stack_render("ollama", {"OLLAMA_MODEL": "qwen2.5:7b", "OLLAMA_NUM_CTX": "16384"})
    services = project["services"]
    assert services["ollama-pull"]["command"] == ["pull", "qwen2.5:7b"]
    assert services["ollama-pull"]["environment"]["OLLAMA_HOST"] == "http://ollama:11434"
    assert services["ollama"]["environment"]["OLLAMA_CONTEXT_LENGTH"] == "16384"
    assert services["backend"]["environment"]["OLLAMA_NUM_CTX"] == "16384"
    gpu = stack_render("ollama", {"COMPOSE_PROFILES": "gpu"})["services"]["ollama-gpu"]
    assert "ollama" in gpu["networks"]["default"]["aliases"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["driver"] == "nvidia"


def test_committed_env_files_hold_no_secrets():
    for stack in STACKS:
        values = read_env_file(env_file(stack))
        for key, value in values.items():
            if SECRET_NAME.search(key):
                assert value == "", f"{env_file(stack).name}: {key} must stay empty in the repository"


# --- healthchecks that work, not only tools that exist --------------------------------------------------

@pytest.mark.parametrize("service, port_in_test", [("qdrant", 6333), ("backend", 8000), ("vllm", 8001), ("vllm-embed", 8002)])
def test_healthchecks_pass_on_a_healthy_service_and_fail_otherwise(stand_in, service, port_in_test):
    test = stack_render("vllm", {"COMPOSE_PROFILES": "vllm,gpu-embed"})["services"][service]["healthcheck"]["test"]
    port, handler = stand_in
    assert run_check(test, port_in_test, port) == 0
    handler.status = 503
    assert run_check(test, port_in_test, port) != 0
    assert run_check(test, port_in_test, free_port()) != 0  # nothing listening
