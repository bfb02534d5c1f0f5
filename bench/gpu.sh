#!/usr/bin/env bash
# GPU benchmark (for a CUDA machine): bf16 backend throughput vs batch size, judge throughput,
# QLoRA/LoRA SFT, reward-model and PPO steps/s with peak memory. Figures go in docs/benchmarks.md.
#   bash bench/gpu.sh                 # venv python, embedded default model
#   PYTHON=python3 MODEL=... bash bench/gpu.sh [extra gpu_bench.py args]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
exec "$PY" bench/gpu_bench.py --model "${MODEL:-default}" "$@"
