#!/usr/bin/env bash
# ON the lent GPU machine, after setup.sh: raw vLLM and the appliance's /ask measured side by side, one
# concurrency level after another, with the same prompt and answer sizes. Meant to run detached (a device
# call lasts 10 minutes at most), then collected:
#   setsid bash benchmarks/gpu/bench.sh > /tmp/gpu-bench/bench.out 2>&1 < /dev/null &
#   ... later: cat /tmp/gpu-bench/bench.out; cp /tmp/gpu-bench/results/* "$OUT"/
# TOOLS="vllm ask chat" picks what runs (ask alone re-measures the backend after a change); TAG names the
# raw files of a run, so a before/after pair stays apart.
set -uo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"; KIT=.gpu/pz
LEVELS="${LEVELS:-1 16 64 256}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-256}"
TOOLS="${TOOLS:-vllm ask chat}"
TAG="${TAG:-}"
RAW=/tmp/gpu-bench/raw; RESULTS=/tmp/gpu-bench/results; mkdir -p "$RAW" "$RESULTS"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
APP_PATH="/tmp/app:/tmp/site:$REPO"
requests_for() { case "$1" in 1) echo 8 ;; 16) echo 48 ;; 64) echo 128 ;; *) echo $(($1 * 2)) ;; esac; }
step() { echo "$(date +%T) $*"; }

# The RAG prompt's size, as the engine counts it (chat template included): raw vLLM gets the same.
PROMPT_TOKENS=$(curl -s -m 60 -X POST localhost:8000/ask -H 'Content-Type: application/json' \
    -d '{"q": "How do I index a folder?", "space_id": "docs", "max_tokens": 8}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["prompt_tokens"])')
step "RAG prompt: $PROMPT_TOKENS tokens; answers: $OUTPUT_TOKENS tokens; levels: $LEVELS; tools: $TOOLS"

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
    if [[ " $TOOLS " == *" ask "* ]]; then
        step "cli.bench ask c=$c n=$n"
        PYTHONPATH="$APP_PATH" timeout 300 python3 -m cli.bench --json "$RAW/ask$TAG-c$c.json" ask --url http://127.0.0.1:8000 \
            --space docs --concurrency "$c" --requests "$n" --max-tokens "$OUTPUT_TOKENS" --warmup 2 > "$RAW/ask$TAG-c$c.log" 2>&1 \
            || { step "ask failed"; tail -20 "$RAW/ask$TAG-c$c.log"; }
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
step "combining"
PYTHONPATH="$APP_PATH" python3 benchmarks/gpu/combine.py --raw-dir "$RAW" --tag="$TAG" --prompt-tokens "$PROMPT_TOKENS" \
    --output-tokens "$OUTPUT_TOKENS" --out-dir "$RESULTS"
tar czf "$RESULTS/raw-runs$TAG.tar.gz" -C /tmp/gpu-bench raw vllm.log backend.log
step "done"
