#!/usr/bin/env bash
# One run of the EDM-vs-EDM2 comparison of docs/digits_quality.md on the embedded digits: train with a recipe, pick the
# EMA on held-out seeds, then measure FD_digits on the three seed sets of the other digits write-ups.
#
#   bash benchmarks/digits_recipe_run.sh RECIPE SEED KIMG OUT [extra train_edm.py flags]
#
# RECIPE: `edm` (`--arch ddpmpp`: DDPM++, EDM loss, constant lr, half-life EMA, augmentation) or `edm2`
# (`--arch edm2`: EDM2's network, loss, lr schedule and post-hoc EMA). For edm2 the post-hoc EMA is reconstructed at
# several σ_rel and the one with the lowest FD_digits on seeds 3000-3499 is kept (the selection set is never reported);
# edm keeps its half-life EMA. Reported: FD_digits of seeds 0-999, 1000-1999, 2000-2999 (random classes, 18 Heun
# steps) in OUT/fd_digits.json, the chosen σ_rel in OUT/phema_choice.json, the training time in OUT/train_seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
recipe=$1 seed=$2 kimg=$3 out=$4
shift 4
case $recipe in
    edm) recipe_flags=(--arch ddpmpp) ;;
    edm2) recipe_flags=(--arch edm2) ;;
    *) echo "RECIPE must be edm or edm2" >&2; exit 2 ;;
esac
ref=outputs/digits-ref.npz
mkdir -p outputs
[ -f "$ref" ] || python -m diffusers_edm.fid ref --detector digits --dest "$ref"

start=$(date +%s)
python train_edm.py --output_dir "$out" --seed "$seed" --duration_kimg "$kimg" --report_to none \
    --overwrite_output_dir "${recipe_flags[@]}" "$@"
echo $(( $(date +%s) - start )) > "$out/train_seconds"

model=$out
if [ "$recipe" = edm2 ]; then
    stds=0.05,0.10,0.15
    python -m diffusers_edm.reconstruct_phema --run "$out" --std "$stds" --out "$out/phema-sweep" --overwrite
    best="" best_fd=""
    for std in ${stds//,/ }; do
        folder=$(ls -d "$out"/phema-sweep/std-"$std"* | head -1)
        python -m diffusers_edm.fid calc --model "$folder" --detector digits --ref "$ref" --seeds 3000-3499 \
            --steps 18 --out "$folder/fd_heldout.json" > /dev/null
        fd=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['value'])" "$folder/fd_heldout.json")
        echo "σ_rel $std: FD_digits on seeds 3000-3499 = $fd"
        if [ -z "$best_fd" ] || python -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$fd" "$best_fd"; then
            best=$folder best_fd=$fd
        fi
    done
    echo "{\"folder\": \"$best\", \"fd_heldout\": $best_fd, \"heldout_seeds\": \"3000-3499\"}" > "$out/phema_choice.json"
    model=$best
fi
python -m diffusers_edm.fid calc --model "$model" --detector digits --ref "$ref" --seeds 0-999 --repeats 3 --steps 18 \
    --out "$out/fd_digits.json"
