#!/usr/bin/env bash
# Stop the server started by start.sh: SIGTERM to its process group, wait up to VLLM_CPU_STOP_TIMEOUT
# seconds (default 30), then SIGKILL. Removes the pid file. Not running is not an error.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

if ! pid="$(vllm_live_pid)"; then
    if [[ -f "$PID_FILE" ]]; then
        vllm_log "stale pid file $PID_FILE removed (no live vLLM server with that pid)"
        rm -f "$PID_FILE"
    else
        vllm_log "not running"
    fi
    exit 0
fi

# start.sh runs the server under setsid, so its pid is its process-group id and the group holds the engine
# core child too. Signal the group only when that holds, so a reused pid never takes others with it.
pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
if [[ "$pgid" == "$pid" ]]; then target="-$pid"; else target="$pid"; fi

signal() { kill "-$1" -- "$target" 2>/dev/null || true; }
group_alive() {
    if [[ "$target" == -* ]]; then kill -0 -- "$target" 2>/dev/null; else kill -0 "$pid" 2>/dev/null; fi
}

# Shared-memory segments the server's processes hold. On SIGTERM vLLM's resource tracker unlinks them; after a
# SIGKILL (the tracker dies too) they would stay in /dev/shm (~400 MB), so they are noted before any signal and
# whatever is left once the whole group has exited is removed by name.
shm_of_group() {
    local p pids fd
    if [[ "$target" == -* ]]; then pids="$(ps -o pid= -g "$pid" 2>/dev/null || true)"; else pids="$pid"; fi
    for p in $pids; do
        grep -o '/dev/shm/[^ ]*' "/proc/$p/maps" 2>/dev/null || true
        for fd in "/proc/$p/fd"/*; do
            case "$(readlink "$fd" 2>/dev/null || true)" in /dev/shm/*) readlink "$fd" ;; esac
        done
    done | sort -u
}

shm_files="$(shm_of_group)"

vllm_log "stopping pid $pid (SIGTERM to ${target/#-/group })"
signal TERM
deadline=$((SECONDS + STOP_TIMEOUT))
while group_alive && ((SECONDS < deadline)); do
    sleep 1
done
if group_alive; then
    vllm_log "still running after ${STOP_TIMEOUT}s; SIGKILL"
    signal KILL
    for _ in 1 2 3 4 5; do
        group_alive || break
        sleep 1
    done
fi
if [[ -n "$shm_files" ]] && ! group_alive; then
    while IFS= read -r f; do
        if [[ -e "$f" ]]; then rm -f -- "$f"; fi
    done <<<"$shm_files"
fi
rm -f "$PID_FILE"
if group_alive; then
    vllm_log "ERROR: pid $pid did not exit"
    exit 1
fi
vllm_log "stopped"
