# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this file
# Shared settings for start.sh / stop.sh (sourced, not run). Every value can be overridden from the environment.
# Names carry a VLLM_CPU_ prefix on purpose: the GPU profile's VLLM_GPU_MEMORY_UTILIZATION=0.90 or
# VLLM_MAX_MODEL_LEN=8192 in a user's shell must not leak into the CPU server (0.9 of RAM refuses to start here).

VLLM_CPU_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VLLM_CPU_ROOT="$(cd "$VLLM_CPU_HERE/../.." && pwd)"

VENV="${VLLM_CPU_VENV:-$VLLM_CPU_ROOT/.venv-vllm}"
CACHE="${VLLM_CPU_CACHE:-$VLLM_CPU_ROOT/.cache}"
# Which model to build and serve: smollm2 (135M, the fast one the engine tests use), qwen-0.5b or qwen-1.5b
# (Qwen2.5-Coder-Instruct, GGUFs split over PyPI packages; the Makefile's demo target names its choice). Sources
# live in build_model.py's MODELS; this table only maps the key to the served name, also the folder's name.
MODEL_KEY="${VLLM_CPU_MODEL:-smollm2}"
case "$MODEL_KEY" in
    smollm2) DEFAULT_SERVED_NAME=smollm2-135m-instruct ;;
    qwen-0.5b) DEFAULT_SERVED_NAME=qwen2.5-coder-0.5b-instruct ;;
    qwen-1.5b) DEFAULT_SERVED_NAME=qwen2.5-coder-1.5b-instruct ;;
    *) printf '[vllm-cpu] ERROR: VLLM_CPU_MODEL=%s: use smollm2, qwen-0.5b or qwen-1.5b\n' "$MODEL_KEY" >&2; exit 2 ;;
esac
MODEL_DIR="${VLLM_CPU_MODEL_DIR:-$CACHE/$DEFAULT_SERVED_NAME}"
PORT="${VLLM_PORT:-8001}"
HOST="${VLLM_CPU_HOST:-127.0.0.1}"
SERVED_NAME="${VLLM_CPU_SERVED_MODEL_NAME:-$DEFAULT_SERVED_NAME}"
LOG_FILE="${VLLM_CPU_LOG:-$CACHE/vllm-cpu.log}"
PID_FILE="${VLLM_CPU_PID_FILE:-$CACHE/vllm-cpu.pid}"
START_TIMEOUT="${VLLM_CPU_START_TIMEOUT:-600}"
STOP_TIMEOUT="${VLLM_CPU_STOP_TIMEOUT:-30}"
API_KEY="${VLLM_CPU_API_KEY:-}"

# Client-side address: a server bound to 0.0.0.0 or :: is still reached through loopback.
case "$HOST" in
    0.0.0.0 | "" | :: ) CLIENT_HOST=localhost ;;
    *) CLIENT_HOST="$HOST" ;;
esac
BASE_URL="http://$CLIENT_HOST:$PORT"

vllm_log() { printf '[vllm-cpu] %s\n' "$*" >&2; }

# Prints the pid from the pid file if that process is alive and is a vLLM api_server, else nothing (returns 1).
# The command-line check keeps a stale pid file from ever pointing stop.sh at an unrelated process that reused
# the pid.
vllm_live_pid() {
    local pid
    [[ -f "$PID_FILE" ]] || return 1
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n "$pid" ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [[ -r "/proc/$pid/cmdline" ]]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'vllm.entrypoints.openai.api_server' || return 1
    fi
    printf '%s\n' "$pid"
}

vllm_curl() {
    local path="$1"
    if [[ -n "$API_KEY" ]]; then
        curl -sf --max-time 10 -H "Authorization: Bearer $API_KEY" "$BASE_URL$path"
    else
        curl -sf --max-time 10 "$BASE_URL$path"
    fi
}

# The ids /v1/models lists, one a line (nothing, and status 1, while the server is not up).
vllm_served_models() {
    local models
    vllm_curl /health >/dev/null 2>&1 || return 1
    models="$(vllm_curl /v1/models 2>/dev/null)" || return 1
    printf '%s' "$models" | "$VENV/bin/python" -c '
import json, sys
print("\n".join(m.get("id", "") for m in json.load(sys.stdin).get("data", [])))
' 2>/dev/null
}

# True when /health answers and /v1/models lists $SERVED_NAME.
vllm_ready() {
    local served
    served="$(vllm_served_models)" || return 1
    grep -qxF -- "$SERVED_NAME" <<<"$served"
}
