#!/usr/bin/env bash
# The longer CPU run of docs/digits_quality.md: train the default digits model for 320 kimg (5000 steps of 64 images,
# ~25 minutes on 2 CPU cores), then measure its samples with our own digits classifier.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-outputs/digits-320kimg}
accelerate launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    train_edm.py --output_dir "$out" --duration_kimg 320
python benchmarks/digits_quality.py --pipeline "$out" --output "$out/quality.json"
