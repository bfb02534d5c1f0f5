#!/usr/bin/env bash
# Installs llama-cpp-python[server] into .venv (the optional llama.cpp fast path and the real server
# behind tests/test_backend_http.py), built for any x86-64 CPU with AVX2 instead of the build machine's
# own instruction set. Why: pip builds llama.cpp with -march=native and caches the wheel by version
# only, and the native build crashed (general protection fault in libggml-cpu) on a VM whose CPU
# reports AMX and AVX512-FP16 - the same wheel also moves between machines through pip's cache. The
# portable wheel is built once (~5-10 min on 2 cores) into ~/.cache/cai-workbench/ and reused by every
# clone. Other architectures (arm64) keep llama.cpp's defaults. Used by `make install-server`.
set -euo pipefail

PY="${PY:-.venv/bin/python}"
REQ="requirements-server.txt"
fail() { echo "install_server.sh: $*" >&2; exit 1; }
[ -f "$REQ" ] || fail "run this from the repository root (no $REQ in $(pwd))"
[ -x "$PY" ] || fail "no $PY: run make install first"

VERSION="$(sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' "$REQ")"
[ -n "$VERSION" ] || fail "no llama-cpp-python[server]==VERSION pin in $REQ"
FLAGS=""
if [ "$(uname -m)" = "x86_64" ]; then
  FLAGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
  FLAGS="$FLAGS -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
fi
TAG="$(printf '%s' "$VERSION $FLAGS" | sha1sum | cut -c1-10)"
WHEELS="${CAI_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cai-workbench}/llama-cpp-python-$VERSION-$TAG"
STAMP=".venv/.server-installed"

wheel() { ls "$WHEELS"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1; }
if [ -z "$(wheel)" ]; then
  echo "install_server.sh: building llama-cpp-python $VERSION ($FLAGS) into $WHEELS (once; minutes)" >&2
  mkdir -p "$WHEELS"
  CMAKE_ARGS="$FLAGS" "$PY" -m pip wheel --quiet --no-deps --no-cache-dir --no-binary llama-cpp-python \
      --wheel-dir "$WHEELS" "llama-cpp-python==$VERSION"
fi
WHEEL="$(wheel)"
[ -n "$WHEEL" ] || fail "no wheel was built in $WHEELS"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WHEEL" ]; then
  "$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL"
  "$PY" -m pip install --quiet -r "$REQ"   # the [server] extras; llama-cpp-python itself is satisfied now
  echo "$WHEEL" > "$STAMP"
fi
"$PY" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"
