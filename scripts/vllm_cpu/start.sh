#!/usr/bin/env bash
# Start a real vLLM OpenAI-compatible server on CPU in the background and return once it serves the model.
#
#   scripts/vllm_cpu/start.sh            # port ${VLLM_PORT:-8001}; log .cache/vllm-cpu.log; pid .cache/vllm-cpu.pid
#   scripts/vllm_cpu/stop.sh
#
# Runs setup.sh first (fast when already done). Returns at once if our server is already up on that port; waits
# for a start-up in progress; fails (with the log tail) if the process dies or is not ready within
# VLLM_CPU_START_TIMEOUT seconds (default 600; ~2.5 min measured on 2 cores).
#
# Server knobs (VLLM_CPU_ prefix so the GPU profile's VLLM_* values never leak in):
#   VLLM_CPU_DTYPE (auto: bfloat16 if the CPU has avx512_bf16/amx_bf16, else float32)  VLLM_CPU_MAX_MODEL_LEN (4096)  VLLM_CPU_GPU_MEMORY_UTILIZATION (0.5)
#   VLLM_CPU_KVCACHE_SPACE (2, GiB of RAM for the KV cache)   VLLM_CPU_API_KEY (unset: no auth)
#   VLLM_CPU_MODEL (smollm2 | qwen-0.5b | qwen-1.5b; default smollm2)
#   VLLM_CPU_HOST (127.0.0.1)  VLLM_CPU_SERVED_MODEL_NAME (the model's name, e.g. smollm2-135m-instruct)
#   VLLM_CPU_ENFORCE_EAGER (1: --enforce-eager; 0: torch.compile warm-up, ~3.5 min instead of ~1 min to start,
#                           no faster answers on this model)
#   VLLM_CPU_EXTRA_ARGS (extra api_server flags, word-split)
# The server gets a clean VLLM_* environment: every exported VLLM_* variable is removed except a few genuine vLLM
# CPU knobs (VLLM_CPU_OMP_THREADS_BIND, VLLM_CPU_NUM_OF_RESERVED_CPU, VLLM_LOGGING_LEVEL). vLLM itself reads
# VLLM_PORT as the base of its *internal* ports and VLLM_API_KEY as a required key, and warns about (or, with
# validation on, refuses) unknown VLLM_* names such as the GPU profile's VLLM_MODEL.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

command -v curl >/dev/null 2>&1 || { vllm_log "ERROR: curl is required"; exit 1; }

"$HERE/setup.sh"

mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"

fail_with_log() {
    vllm_log "ERROR: $*"
    if [[ -f "$LOG_FILE" ]]; then
        vllm_log "last 60 lines of $LOG_FILE:"
        tail -n 60 "$LOG_FILE" >&2 || true
    fi
    exit 1
}

if pid="$(vllm_live_pid)"; then
    if vllm_ready; then
        vllm_log "already running (pid $pid) at $BASE_URL, serving $SERVED_NAME"
        exit 0
    fi
    if served="$(vllm_served_models)"; then
        # Up, but with another VLLM_CPU_MODEL: waiting would only time out.
        vllm_log "ERROR: pid $pid at $BASE_URL serves $(echo $served), not $SERVED_NAME (VLLM_CPU_MODEL=$MODEL_KEY); stop it first (scripts/vllm_cpu/stop.sh or make vllm-cpu-stop)"
        exit 1
    fi
    vllm_log "pid $pid from $PID_FILE is alive but not ready yet; waiting for it"
else
    rm -f "$PID_FILE"
    if (exec 3<>"/dev/tcp/$CLIENT_HOST/$PORT") 2>/dev/null; then
        vllm_log "ERROR: port $PORT on $CLIENT_HOST is already in use by a process that is not ours ($PID_FILE has no live pid); stop it or set VLLM_PORT"
        exit 1
    fi

    # bf16 only pays off with native bf16 (AVX512-BF16/AMX). On an AVX2-only CPU (this project's machines) oneDNN
    # refuses bf16 matmuls, torch emulates them, and prefill is ~4x slower than float32 (measured: 1.4k-token
    # prompt 36.5 s vs 8.8 s; see README). Decode speed is about the same either way.
    dtype="${VLLM_CPU_DTYPE:-}"
    if [[ -z "$dtype" ]]; then
        if grep -qE '(^| )(avx512_bf16|amx_bf16)( |$)' /proc/cpuinfo 2>/dev/null; then dtype=bfloat16; else dtype=float32; fi
        vllm_log "dtype $dtype (auto: native bf16 $([[ $dtype == bfloat16 ]] && echo found || echo 'not found'); set VLLM_CPU_DTYPE to override)"
    fi

    args=(
        -m vllm.entrypoints.openai.api_server
        --model "$MODEL_DIR"
        --served-model-name "$SERVED_NAME"
        --host "$HOST"
        --port "$PORT"
        --dtype "$dtype"
        --max-model-len "${VLLM_CPU_MAX_MODEL_LEN:-4096}"
        --gpu-memory-utilization "${VLLM_CPU_GPU_MEMORY_UTILIZATION:-0.5}"
    )
    if [[ "${VLLM_CPU_ENFORCE_EAGER:-1}" == 1 ]]; then
        args+=(--enforce-eager)
    fi
    if [[ -n "$API_KEY" ]]; then
        args+=(--api-key "$API_KEY")
    fi
    if [[ -n "${VLLM_CPU_EXTRA_ARGS:-}" ]]; then
        # shellcheck disable=SC2206  # deliberately word-split
        args+=(${VLLM_CPU_EXTRA_ARGS})
    fi

    vllm_log "starting: $VENV/bin/python ${args[*]}"
    {
        printf '=== %s start.sh: %s %s\n' "$(date -u +%FT%TZ)" "$VENV/bin/python" "${args[*]}"
    } >>"$LOG_FILE"

    # setsid: the server and its engine-core child get their own process group, which stop.sh signals as a
    # whole, and a Ctrl-C in the calling shell (or make) does not reach them. The `vllm` console script is
    # broken in this distribution, hence `python -m`. Offline: the model is a local folder. VLLM_CACHE_ROOT keeps
    # vLLM's caches under .cache/ instead of ~/.cache (its torch.compile AOT cache does not reload in 0.32.0).
    server_env=()
    while IFS= read -r name; do
        case "$name" in VLLM_*) server_env+=(-u "$name") ;; esac
    done < <(compgen -e)
    for name in VLLM_CPU_OMP_THREADS_BIND VLLM_CPU_NUM_OF_RESERVED_CPU VLLM_LOGGING_LEVEL; do
        if [[ -n "${!name:-}" ]]; then server_env+=("$name=${!name}"); fi
    done
    server_env+=(
        "VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}"
        "VLLM_CACHE_ROOT=${VLLM_CACHE_ROOT:-$CACHE/vllm-cache}"
        VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
    )
    env "${server_env[@]}" setsid "$VENV/bin/python" "${args[@]}" </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    vllm_log "pid $pid, log $LOG_FILE; waiting up to ${START_TIMEOUT}s for $BASE_URL"
fi

SECONDS=0
while ((SECONDS < START_TIMEOUT)); do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$PID_FILE"
        fail_with_log "vLLM (pid $pid) exited during start-up"
    fi
    if vllm_ready; then
        vllm_log "ready after ${SECONDS}s: $BASE_URL (model $SERVED_NAME, pid $pid)"
        exit 0
    fi
    sleep 2
done

vllm_log "not ready after ${START_TIMEOUT}s; stopping it"
"$HERE/stop.sh" || true
fail_with_log "vLLM did not become ready within ${START_TIMEOUT}s"
