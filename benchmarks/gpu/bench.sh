#!/usr/bin/env bash
# ON the lent GPU machine, after setup.sh: raw vLLM and the appliance's /ask measured side by side, one
# concurrency level after another, with the same prompt and answer sizes. Results go to $OUT.
#   LEVELS="1 16 64 256" OUTPUT_TOKENS=256 bash benchmarks/gpu/bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO="$PWD"; KIT=.gpu/pz
OUT="${OUT:?}"; RAW=/tmp/gpu-bench/raw; rm -rf "$RAW"; mkdir -p "$RAW"  # $OUT takes 8 files: raw runs go back as one tar
LEVELS="${LEVELS:-1 16 64 256}"
OUTPUT_TOKENS="${OUTPUT_TOKENS:-256}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
APP_PATH="/tmp/app:/tmp/site:$REPO"
requests_for() { local c=$1; if [ "$c" -eq 1 ]; then echo 12; elif [ "$c" -lt 64 ]; then echo $((c * 4)); else echo $((c * 2)); fi; }

# The RAG prompt's size, as the engine counts it (chat template included): raw vLLM gets the same.
PROMPT_TOKENS=$(curl -s -X POST localhost:8000/ask -H 'Content-Type: application/json' \
    -d '{"q": "How do I index a folder?", "space_id": "docs", "max_tokens": 8}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["usage"]["prompt_tokens"])')
echo "RAG prompt: $PROMPT_TOKENS tokens; answers: $OUTPUT_TOKENS tokens; levels: $LEVELS"

for c in $LEVELS; do
    n=$(requests_for "$c")
    echo "== concurrency $c, $n requests"
    PYTHONPATH=/tmp/site python3 -m vllm.entrypoints.cli.main bench serve --backend vllm \
        --base-url http://127.0.0.1:8001 --model llama8b --tokenizer "$KIT/llama-3.1-8b-shape" \
        --dataset-name random --random-input-len "$PROMPT_TOKENS" --random-output-len "$OUTPUT_TOKENS" \
        --ignore-eos --num-prompts "$n" --max-concurrency "$c" --percentile-metrics ttft,tpot,itl,e2el \
        --metric-percentiles 50,99 --save-result --result-dir "$RAW" --result-filename "vllm-c$c.json" \
        > "$RAW/vllm-c$c.log" 2>&1 || { tail -30 "$RAW/vllm-c$c.log"; exit 4; }
    PYTHONPATH="$APP_PATH" python3 -m cli.bench --json "$RAW/ask-c$c.json" ask --url http://127.0.0.1:8000 \
        --space docs --concurrency "$c" --requests "$n" --max-tokens "$OUTPUT_TOKENS" --warmup 2 > "$RAW/ask-c$c.log" 2>&1 \
        || { tail -30 "$RAW/ask-c$c.log"; exit 5; }
    PYTHONPATH="$APP_PATH" python3 -m cli.bench --json "$RAW/chat-c$c.json" raw --url http://127.0.0.1:8001/v1 \
        --model llama8b --prompt-tokens "$PROMPT_TOKENS" --max-tokens "$OUTPUT_TOKENS" --ignore-eos \
        --concurrency "$c" --requests "$n" --warmup 2 > "$RAW/chat-c$c.log" 2>&1 || { tail -30 "$RAW/chat-c$c.log"; exit 6; }
    tail -4 "$RAW/ask-c$c.log"
done
PYTHONPATH="$APP_PATH" python3 benchmarks/gpu/combine.py --raw-dir "$RAW" --prompt-tokens "$PROMPT_TOKENS" \
    --output-tokens "$OUTPUT_TOKENS" --out-dir "$OUT"
tar czf "$OUT/raw-runs.tar.gz" -C "$(dirname "$RAW")" raw /tmp/gpu-bench/vllm.log /tmp/gpu-bench/backend.log 2>/dev/null || true
