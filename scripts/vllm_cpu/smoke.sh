#!/usr/bin/env bash
# One real RAG-style chat completion against the running server (start.sh first). Prints the answer and the
# latency; fails unless the answer contains the fact from source [1] ("1889").
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
. "$HERE/common.sh"

vllm_ready || { vllm_log "ERROR: no ready server at $BASE_URL (run scripts/vllm_cpu/start.sh)"; exit 1; }

body="$(SERVED_NAME="$SERVED_NAME" "$VENV/bin/python" -c '
import json, os
system = ("You are a helpful assistant. Answer the question using only the numbered sources below and cite "
          "the source number in square brackets, like [1].\n\nSources:\n"
          "[1] The Eiffel Tower is in Paris and was completed in 1889.\n"
          "[2] The Colosseum is in Rome and was completed in 80 AD.")
print(json.dumps({"model": os.environ["SERVED_NAME"], "temperature": 0, "max_tokens": 64, "messages": [
    {"role": "system", "content": system},
    {"role": "user", "content": "In which year was the Eiffel Tower completed?"}]}))
')"

auth=()
if [[ -n "$API_KEY" ]]; then auth=(-H "Authorization: Bearer $API_KEY"); fi
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
timing="$(curl -sf --max-time 120 "${auth[@]}" -H 'Content-Type: application/json' -d "$body" \
    -o "$out" -w '%{time_total}' "$BASE_URL/v1/chat/completions")"
answer="$("$VENV/bin/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["choices"][0]["message"]["content"])' "$out")"
vllm_log "answer in ${timing}s: $answer"
case "$answer" in
    *1889*) exit 0 ;;
    *) vllm_log "ERROR: expected 1889 in the answer"; exit 1 ;;
esac
