#!/usr/bin/env bash
# The longer CPU run of docs/digits_quality.md: train the EDM digits model (DDPM++, EDM's recipe) for 320 kimg (5000 steps of 64 images,
# ~25 minutes on 2 CPU cores), then measure its samples with the project's digits feature network: FD_digits through
# `python -m diffusers_edm.fid` (1000 samples with random classes, seed sets 0-999, 1000-1999, 2000-2999) and the
# per-class FD and class accuracy of benchmarks/digits_quality.py.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/digits-320kimg}
accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    train_edm.py --output_dir "$out" --arch ddpmpp --duration_kimg 320
python -m diffusers_edm.fid ref --detector digits --dest "$out/digits-ref.npz"
python -m diffusers_edm.fid calc --model "$out" --detector digits --ref "$out/digits-ref.npz" --seeds 0-999 \
    --repeats 3 --steps 18 --out "$out/fd_digits.json"
python benchmarks/digits_quality.py --pipeline "$out" --output "$out/quality.json"
