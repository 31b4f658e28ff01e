#!/usr/bin/env bash
# Redraws the README's figures from the README's own commands (the tour), run in a scratch copy of the
# samples on the CPU (about two minutes on 2 cores). Run from anywhere; needs `landscape` on the PATH.
set -euo pipefail
img=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$img/../../sample_checkpoints" "$work/"
cd "$work"
export CUDA_VISIBLE_DEVICES=""  # the figures of the README were made on a CPU

landscape spectrum sample_checkpoints/mlp_digits.pt --trace --density --bottom-k 2 -q >/dev/null
landscape train --model mlp --data digits --opt ssam --lr 0.1 --momentum 0.9 --rho 0.05 --epochs 20 \
  --save-every-epochs 1 --track-sharpness-every 100 --track-samples 1000 --out runs/ssam -q >/dev/null
landscape plot runs/ssam >/dev/null
landscape surface sample_checkpoints/mlp_digits.pt --2d --split train,test -q >/dev/null
landscape plot sample_checkpoints/mlp_digits.surface2d.h5 >/dev/null
landscape surface sample_checkpoints/mlp_digits.pt --1d --x -2:2:81 --out sgd.h5 -q >/dev/null
landscape surface sample_checkpoints/mlp_digits_sam.pt --1d --dirs file:sgd.h5 --out sam.h5 -q >/dev/null
landscape surface sample_checkpoints/mlp_digits_ssam.pt --1d --dirs file:sgd.h5 --out ssam.h5 -q >/dev/null
landscape plot sgd.h5 sam.h5 ssam.h5 --label sgd --label sam --label ssam >/dev/null
landscape surface runs/ssam/final.pt --2d --dirs pca:runs/ssam -q >/dev/null
landscape plot runs/ssam/final.surface2d.h5 --kind filled >/dev/null

cp sample_checkpoints/mlp_digits.spectrum.png "$img/spectrum_mlp_digits.png"
for kind in contour filled heatmap 3d; do
  cp "sample_checkpoints/mlp_digits.surface2d.$kind.png" "$img/surface_mlp_digits.$kind.png"
done
cp sgd.compare.png "$img/surface1d_sgd_sam_ssam.png"
cp runs/ssam/final.surface2d.filled.png "$img/trajectory_pca.png"
cp runs/ssam/train.png "$img/train_log.png"
ls -1 "$img"/*.png
