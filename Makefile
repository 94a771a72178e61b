# Two commands on a fresh machine: `make demo` and `make test`; each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha256sum | cut -c1-12)
DEMO_DATA_DIR ?= ./data/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test serve index bench-retrieval bench-ingest clean

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

demo: setup
	DATA_DIR=$(DEMO_DATA_DIR) $(PY) -m cli.demo

test: setup
	$(PY) -m pytest -q

serve: setup
	$(PY) -m backend

bench-retrieval: setup
	$(PY) -m cli.bench retrieval --sizes 10000 100000

bench-ingest: setup
	$(PY) -m cli.bench ingest

clean:
	rm -rf $(VENV) data .pytest_cache
