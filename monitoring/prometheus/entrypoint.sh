#!/bin/sh
# Entrypoint of the prometheus service (prom/prometheus is busybox: POSIX sh, runs as `nobody`).
#
# Prometheus does not expand environment variables in prometheus.yml, so the two values that differ per
# deployment are written to files that the config points at, then Prometheus itself takes over:
#   $RUNTIME_DIR/metrics_api_key    <- METRICS_API_KEY (a `*` key of the backend's API_KEYS; may be empty)
#                                      read by the backend job's `authorization.credentials_file`, on every
#                                      scrape (a changed key needs a restart of this container only)
#   $RUNTIME_DIR/vllm_targets.json  <- VLLM_METRICS_TARGET (host:port, or several comma-separated, e.g. the
#                                      replicas overlay's vllm:8001,vllm-1:8001; empty = no vLLM to scrape)
#                                      read by the vllm job's `file_sd_configs`
# RUNTIME_DIR is a tmpfs (compose `tmpfs:`), so the key never lands on a volume. The paths here and in
# prometheus.yml must agree: tests/deploy/test_monitoring.py runs this script and checks that they do.
set -eu

RUNTIME_DIR="${PROMETHEUS_RUNTIME_DIR:-/run/prometheus}"
umask 077
mkdir -p "$RUNTIME_DIR"

# Empty key: the file is empty and Prometheus sends "Authorization: Bearer " (the backend ignores the header
# while API_KEYS is empty). Trailing whitespace is trimmed by Prometheus when it reads the file.
printf '%s' "${METRICS_API_KEY:-}" > "$RUNTIME_DIR/metrics_api_key.tmp"
mv "$RUNTIME_DIR/metrics_api_key.tmp" "$RUNTIME_DIR/metrics_api_key"

target="${VLLM_METRICS_TARGET:-}"
case "$target" in
    "") targets='[]' ;;
    *[!A-Za-z0-9.:_,-]* | ,* | *, | *,,*)
        echo "entrypoint: VLLM_METRICS_TARGET must be host:port[,host:port...], got: $target" >&2
        exit 64 ;;
    # The characters are checked above, so the list becomes JSON by quoting around the commas.
    *) targets="[{\"targets\": [\"$(printf '%s' "$target" | sed 's/,/", "/g')\"]}]" ;;
esac
# Written whole and renamed: Prometheus watches the file and must never read half of it.
printf '%s\n' "$targets" > "$RUNTIME_DIR/vllm_targets.json.tmp"
mv "$RUNTIME_DIR/vllm_targets.json.tmp" "$RUNTIME_DIR/vllm_targets.json"

exec "${PROMETHEUS_BIN:-/bin/prometheus}" "$@"
