#!/usr/bin/env bash
# ON a lent 2-GPU machine (nvidia-h200-x2), after the vLLM wheelhouse parts are in /tmp/stash
# (docs/benchmarks.md, "GPU run"): tensor parallelism measured with dummy weights, one server at a time:
#   8b TP=1, 8b TP=2, 70b TP=2 (Llama-3.1 shapes, bf16; the 70B's 141 GB need both GPUs).
# Each: single stream (c=1) and c=64, 1024 tokens in / 256 out, `vllm bench serve`. Meant to run detached
# (a device call lasts 10 minutes at most), then collected:
#   setsid bash benchmarks/gpu/tp.sh > /tmp/tp/tp.out 2>&1 < /dev/null &
#   ... later: cat /tmp/tp/tp.out; cp /tmp/tp/results/* "$OUT"/
# RUNS="8b:1 8b:2 70b:2" picks the servers: size:tp[:quantization], e.g. 70b:1:fp8 (vLLM's online FP8, which
# fits the 70B on one H200: the single-GPU alternative to TP=2).
set -uo pipefail
cd "$(dirname "$0")/../.."
KIT=.gpu/pz
RUNS="${RUNS:-8b:1 8b:2 70b:2}"
OUT_DIR=/tmp/tp/results; mkdir -p "$OUT_DIR"
# NVLink multicast stays off on these shared hosts (device KINDS.md); vLLM's symmetric-memory all-reduce too.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_ALLREDUCE_USE_SYMM_MEM=0
export HF_HUB_OFFLINE=1 VLLM_USE_FLASHINFER_SAMPLER=0 PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site PATH=/tmp/site/bin:$PATH
step() { echo "$(date +%T) $*"; }

[ -d /tmp/site/vllm ] || bash "$KIT/device-install.sh" || exit 3
# The 70B shape: its config from the repo, the kit's tokenizer (the 8B shape's) beside it.
SHAPE70=/tmp/tp/llama-3.1-70b-shape
mkdir -p "$SHAPE70" && cp benchmarks/gpu/shapes/llama-3.1-70b-shape/config.json "$SHAPE70"/ &&
    cp "$KIT"/llama-3.1-8b-shape/{tokenizer.json,tokenizer_config.json,chat_template.jinja} "$SHAPE70"/
nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv > "$OUT_DIR/gpus.csv"

for run in $RUNS; do
    IFS=: read -r size tp quant <<< "$run"; name="llama-${size}-tp${tp}${quant:+-$quant}"
    shape="$KIT/llama-3.1-8b-shape"; [ "$size" = 70b ] && shape="$SHAPE70"
    step "start $name"
    start=$(date +%s)
    python3 -m vllm.entrypoints.openai.api_server --model "$shape" --served-model-name "$name" --load-format dummy \
        --tensor-parallel-size "$tp" ${quant:+--quantization "$quant"} --max-model-len 4096 --gpu-memory-utilization 0.90 --port 8001 \
        > "$OUT_DIR/$name-server.log" 2>&1 < /dev/null &
    server=$!
    for _ in $(seq 1 450); do curl -sf localhost:8001/health >/dev/null && break; kill -0 $server 2>/dev/null || break; sleep 2; done
    if ! curl -sf localhost:8001/health >/dev/null; then step "$name did not start"; tail -40 "$OUT_DIR/$name-server.log"; kill $server; wait $server; continue; fi
    echo "{\"startup_s\": $(( $(date +%s) - start ))}" > "$OUT_DIR/$name-startup.json"
    step "$name up after $(( $(date +%s) - start )) s"
    for c in 1 64; do
        n=$([ "$c" = 1 ] && echo 12 || echo 256)
        python3 -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url http://127.0.0.1:8001 --model "$name" \
            --tokenizer "$shape" --dataset-name random --random-input-len 1024 --random-output-len 256 --ignore-eos \
            --num-prompts "$n" --max-concurrency "$c" --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,99 \
            --save-result --result-dir "$OUT_DIR" --result-filename "$name-c$c.json" > "$OUT_DIR/$name-c$c.log" 2>&1 \
            || { step "bench $name c=$c failed"; tail -20 "$OUT_DIR/$name-c$c.log"; }
        grep -E "Output token throughput|Median TPOT|Median TTFT" "$OUT_DIR/$name-c$c.log"
    done
    kill $server; wait $server 2>/dev/null
    sleep 5
done
step "done"
