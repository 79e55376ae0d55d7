#!/usr/bin/env bash
# Copyright 2026 The diffusers-edm authors. Licensed under the Apache License, Version 2.0.
# The whole GPU measurement in one command (under 8 minutes on one H100): sampling and training throughput of the
# CIFAR-10 DDPM++ and ImageNet-64 ADM configurations and of the diffusers UNet2DModel baseline, over fp32 / tf32 /
# bf16 / fp16, channels_last, torch.compile and CUDA graphs, EDM2-XS and EDM2-S ImageNet-512 sampling as EDM2's
# generator runs it (32 steps on latents + VAE decode, with and without guidance), EDM2-XS training steps (ImageNet-512
# latents and ImageNet-64 pixels), plus the equivalence check of the fast path's images (fast configuration vs the
# fp32 exact path, same seeds and random weights).
#
#   bash benchmarks/gpu_check.sh OUT_DIR [extra throughput.py flags]
#
# Run from the repository root after `pip install -e .`. Writes OUT_DIR/throughput.jsonl (one JSON line per
# configuration), OUT_DIR/throughput.md (the table, rewritten after every configuration, so a cut-short run still
# leaves one), and OUT_DIR/gpu_check.log (everything printed). The Python part skips configurations that would
# overrun its time budget (GPU_CHECK_BUDGET_S, default 420 s), and a hard timeout (GPU_CHECK_TIMEOUT_S, default 470 s)
# stops it in any case.
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_check.sh OUT_DIR [extra benchmarks/throughput.py flags]" >&2
    exit 2
fi
OUT_DIR=$1
shift
mkdir -p "$OUT_DIR"
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
TIMEOUT=${GPU_CHECK_TIMEOUT_S:-470}
# inductor's compiled kernels are cached here (a second run compiles much faster)
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$OUT_DIR/.inductor-cache}

START=$(date +%s)
"$PYTHON" - <<'PY'
import torch
assert torch.cuda.is_available(), "gpu_check.sh needs a CUDA GPU (torch.cuda.is_available() is False)"
print(f"# GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
PY
status=$?
if [ $status -ne 0 ]; then
    exit $status
fi
timeout --signal=INT --kill-after=20 "$TIMEOUT" "$PYTHON" "$SCRIPT_DIR/throughput.py" --device cuda --grid gpu-check \
    --time_budget "$BUDGET" --check_equivalence --out "$OUT_DIR" "$@" 2>&1 | tee "$OUT_DIR/gpu_check.log"
status=${PIPESTATUS[0]}
END=$(date +%s)
echo "# gpu_check.sh: exit status $status, elapsed $((END - START)) s; results in $OUT_DIR/throughput.jsonl and" \
     "$OUT_DIR/throughput.md" | tee -a "$OUT_DIR/gpu_check.log"
if [ -f "$OUT_DIR/throughput.md" ]; then
    cat "$OUT_DIR/throughput.md"
fi
exit $status
