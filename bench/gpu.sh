#!/usr/bin/env bash
# One script for a lent GPU (under 8 minutes): ELECTRA-Small (seq 128) and ELECTRA-Base
# (seq 512) training steps, ours in bf16 with and without torch.compile, against the
# naive HF baseline, with tokens/s, MFU (vs the GPU's measured bf16 matmul rate) and
# peak memory. On a CPU-only machine it runs the tiny shapes so that it keeps working.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
  "$PY" bench/pretrain.py --shapes small --seq-len 128 --batch-size 128 --steps 20 --warmup 5 --precision bf16
  "$PY" bench/pretrain.py --shapes small --seq-len 128 --batch-size 128 --steps 20 --warmup 5 --precision bf16 --compile
  "$PY" bench/pretrain.py --shapes base --seq-len 512 --batch-size 32 --steps 10 --warmup 3 --precision bf16
  "$PY" bench/pretrain.py --shapes base --seq-len 512 --batch-size 32 --steps 10 --warmup 3 --precision bf16 --compile
else
  echo "no CUDA device: tiny shapes on the CPU"
  "$PY" bench/pretrain.py --shapes tiny --seq-len 64 --batch-size 4 --steps 2 --warmup 1
fi
