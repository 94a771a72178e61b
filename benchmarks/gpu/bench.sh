#!/usr/bin/env bash
# ON the lent GPU machine, after setup.sh: the appliance's /ask and raw vLLM measured side by side, one
# concurrency level after another. The baseline is `replay`: the exact chat requests /ask sends (recorded once
# through `cli.bench record`, a proxy in front of vLLM, by a second backend over a copy of the store), sent
# straight to vLLM with the same client, levels and answer length; `vllm bench serve` (random prompts of the
# same size) stays as a second reference, `chat` (cli.bench raw) as the load generator's own cost. `overload`:
# a backend with ASK_MAX_IN_FLIGHT=64 under 128 streams (cli.bench soak --overload-concurrency). Meant to run detached (a device
# call lasts 10 minutes at most), then collected:
#   setsid bash benchmarks/gpu/bench.sh > /tmp/gpu-bench/bench.out 2>&1 < /dev/null &
#   ... later: cat /tmp/gpu-bench/bench.out; cp /tmp/gpu-bench/results/* "$OUT"/
# TOOLS="vllm replay ask chat overload" picks what runs (ask alone re-measures the backend after a change); TAG names the
# raw files of a run, so a before/after pair stays apart.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
KIT=.gpu/pz
LEVELS="${LEVELS:-1 16 64 256}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-256}"
TOOLS="${TOOLS:-vllm replay ask chat overload}"
TAG="${TAG:-}"
RAW=/tmp/gpu-bench/raw; RESULTS=/tmp/gpu-bench/results; mkdir -p "$RAW" "$RESULTS"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
# setup.sh's choices (models, thread cap, APP_PATH): the side backends must open the store with the same models.
[ -f /tmp/gpu-bench/app.env ] || { echo "run benchmarks/gpu/setup.sh first"; exit 3; }
set -a; . /tmp/gpu-bench/app.env; set +a
# Requests per level, "c:n" pairs; a level not named gets 2c. The defaults take about 8 minutes on an H100
# (benchmarks/gpu/RUN.md has the estimate).
REQUESTS="${REQUESTS:-1:8 16:48 64:128 256:512}"
requests_for() {
    local pair
    for pair in $REQUESTS; do [ "${pair%%:*}" = "$1" ] && { echo "${pair#*:}"; return; }; done
    echo $(($1 * 2))
}
step() { echo "$(date +%T) $*"; }

# The RAG prompt's size, as the engine counts it (chat template included): raw vLLM gets the same.
PROMPT_TOKENS=$(curl -s -m 60 -X POST localhost:8000/ask -H 'Content-Type: application/json' \
    -d '{"q": "How do I index a folder?", "space_id": "docs", "max_tokens": 8}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["prompt_tokens"])')
step "RAG prompt: $PROMPT_TOKENS tokens; answers: $OUTPUT_TOKENS tokens; levels: $LEVELS; tools: $TOOLS"

# A second backend over a copy of the store (setup.sh makes it; the embedded store admits one process), with
# the engine behind the recording proxy, or with a small ASK_MAX_IN_FLIGHT for the overload phase.
SIDE_ENV="DATA_DIR=/tmp/rag-record MODEL_CACHE_DIR=/tmp/rag-models LLM_BACKEND=vllm VLLM_MODEL=llama8b ANSWER_MAX_TOKENS=$OUTPUT_TOKENS HOST=127.0.0.1"
side_backend() {  # side_backend PORT VLLM_URL [VAR=VALUE ...]: starts it, waits for /health, echoes its pid
    local port=$1 url=$2; shift 2
    env $SIDE_ENV PORT="$port" VLLM_BASE_URL="$url" "$@" PYTHONPATH="$APP_PATH" setsid python3 -m backend \
        > "$RAW/backend-$port.log" 2>&1 < /dev/null &
    local pid=$!
    for _ in $(seq 1 150); do curl -sf "localhost:$port/health" >/dev/null && break; sleep 2; done
    echo "$pid"
}
stop_side() { kill "$1"; while kill -0 "$1" 2>/dev/null; do sleep 1; done; }  # the store is free once it exited
[ -d /tmp/rag-record ] || env $SIDE_ENV PYTHONPATH="$APP_PATH" python3 -m cli.index_cli --dir /tmp/corpus --space docs --quiet
PROMPTS="$RAW/prompts.jsonl"
if [[ " $TOOLS " == *" replay "* ]]; then
    step "recording /ask's chat requests (cli.bench record on :8010, a backend on :8002 behind it)"
    PYTHONPATH="$APP_PATH" python3 -m cli.bench record --upstream http://127.0.0.1:8001 --listen 127.0.0.1:8010 \
        --out "$PROMPTS" > "$RAW/record.log" 2>&1 &
    RECORDER=$!
    SIDE=$(side_backend 8002 http://127.0.0.1:8010/v1)
    # One pass over the 20 built-in questions, in order: request i of every later level pairs with prompt i % 20.
    PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench --json "$RAW/record-ask.json" ask --url http://127.0.0.1:8002 \
        --space docs --concurrency 1 --requests 20 --warmup 0 --max-tokens "$OUTPUT_TOKENS" > "$RAW/record-ask.log" 2>&1 \
        || { step "recording pass failed"; tail -20 "$RAW/record-ask.log"; }
    stop_side "$SIDE"
    kill -INT "$RECORDER"; wait "$RECORDER"
    tail -1 "$RAW/record.log"
fi

for c in $LEVELS; do
    n=$(requests_for "$c")
    if [[ " $TOOLS " == *" vllm "* ]]; then
        step "vllm bench serve c=$c n=$n"
        PYTHONPATH=/tmp/site timeout 300 python3 -m vllm.entrypoints.cli.main bench serve --backend vllm \
            --base-url http://127.0.0.1:8001 --model llama8b --tokenizer "$KIT/llama-3.1-8b-shape" \
            --dataset-name random --random-input-len "$PROMPT_TOKENS" --random-output-len "$OUTPUT_TOKENS" \
            --ignore-eos --num-prompts "$n" --max-concurrency "$c" --percentile-metrics ttft,tpot,itl,e2el \
            --metric-percentiles 50,99 --save-result --result-dir "$RAW" --result-filename "vllm-c$c.json" \
            > "$RAW/vllm-c$c.log" 2>&1 || { step "vllm bench failed"; tail -20 "$RAW/vllm-c$c.log"; }
        grep -E "Request throughput|Output token throughput|Median TTFT" "$RAW/vllm-c$c.log"
    fi
    if [[ " $TOOLS " == *" replay "* ]]; then
        step "cli.bench replay c=$c n=$n"
        PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench --json "$RAW/replay-c$c.json" replay --url http://127.0.0.1:8001/v1 \
            --prompts "$PROMPTS" --concurrency "$c" --requests "$n" --warmup 2 > "$RAW/replay-c$c.log" 2>&1 \
            || { step "replay failed"; tail -20 "$RAW/replay-c$c.log"; }
        tail -3 "$RAW/replay-c$c.log"
    fi
    if [[ " $TOOLS " == *" ask "* ]]; then
        step "cli.bench ask c=$c n=$n"
        # The backend's stage histograms before and after: combine.py turns the difference into ms per answer
        # and stage (admission, retrieval_wait, query_embed, search, retrieval, ttft) for this level alone.
        curl -s -m 10 localhost:8000/metrics > "$RAW/metrics$TAG-c$c-before.txt"
        PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench --json "$RAW/ask$TAG-c$c.json" ask --url http://127.0.0.1:8000 \
            --space docs --concurrency "$c" --requests "$n" --max-tokens "$OUTPUT_TOKENS" --warmup 2 > "$RAW/ask$TAG-c$c.log" 2>&1 \
            || { step "ask failed"; tail -20 "$RAW/ask$TAG-c$c.log"; }
        curl -s -m 10 localhost:8000/metrics > "$RAW/metrics$TAG-c$c-after.txt"
        tail -3 "$RAW/ask$TAG-c$c.log"
    fi
    if [[ " $TOOLS " == *" chat "* ]]; then
        step "cli.bench raw c=$c n=$n"
        PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench --json "$RAW/chat-c$c.json" raw --url http://127.0.0.1:8001/v1 \
            --model llama8b --prompt-tokens "$PROMPT_TOKENS" --max-tokens "$OUTPUT_TOKENS" --ignore-eos \
            --concurrency "$c" --requests "$n" --warmup 2 > "$RAW/chat-c$c.log" 2>&1 || { step "raw failed"; tail -20 "$RAW/chat-c$c.log"; }
        tail -3 "$RAW/chat-c$c.log"
    fi
done
if [[ " $TOOLS " == *" overload "* ]]; then
    # Capacity 64 answers (the issue's unloaded reference is c=64); offered 2x that, a queue of 16.
    step "overload: a backend with ASK_MAX_IN_FLIGHT=64 on :8003, 64 streams for 30 s, then 128 for 60 s"
    SIDE=$(side_backend 8003 http://127.0.0.1:8001/v1 ASK_MAX_IN_FLIGHT=64 ASK_QUEUE_SIZE=16 ASK_QUEUE_TIMEOUT_S=30)
    PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench soak --url http://127.0.0.1:8003 --space docs --concurrency 64 \
        --duration 30 --warmup-s 5 --max-tokens "$OUTPUT_TOKENS" --overload-concurrency 128 --overload-s 60 \
        --out-dir "$RAW/overload" > "$RAW/overload.log" 2>&1 || { step "overload failed"; tail -20 "$RAW/overload.log"; }
    grep -E "^Overload" "$RAW/overload.log"
    stop_side "$SIDE"
fi
step "combining"
PYTHONPATH="$APP_PATH" python3 benchmarks/gpu/combine.py --raw-dir "$RAW" --tag="$TAG" --prompt-tokens "$PROMPT_TOKENS" \
    --output-tokens "$OUTPUT_TOKENS" --out-dir "$RESULTS"
tar czf "$RESULTS/raw-runs$TAG.tar.gz" -C /tmp/gpu-bench raw vllm.log backend.log
step "done"
