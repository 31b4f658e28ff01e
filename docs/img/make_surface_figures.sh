#!/usr/bin/env bash
# Redraws the surface, trajectory and training-log figures in docs/img from real runs on the digits
# data (CPU, about two minutes). Run from anywhere; needs `landscape` on the PATH.
set -euo pipefail
cd "$(dirname "$0")"
samples=../../sample_checkpoints
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A run with a checkpoint every epoch and sharpness tracked, for the trajectory and the log figure.
landscape train --model mlp --model-arg 'widths=[64,32,10]' --model-arg activation=tanh \
  --data digits --lr 0.1 --momentum 0.9 --weight-decay 5e-4 --batch-size 64 --epochs 20 \
  --save-every-epochs 1 --track-sharpness-every 100 --seed 0 --device cpu --out "$work/run" --quiet >/dev/null

# 2D random plane around the SGD sample: contour, filled contour, heatmap and 3D surface.
landscape surface "$samples/mlp_digits.pt" --2d --split train,test --device cpu --quiet --out "$work/sgd2d.h5" >/dev/null
landscape plot "$work/sgd2d.h5" --kind all --out surface_mlp_digits.png --overwrite >/dev/null

# SGD, SAM and SSAM on the same 1D direction (the file: directions of the SGD line).
landscape surface "$samples/mlp_digits.pt" --1d --x -2:2:81 --device cpu --quiet --out "$work/sgd1d.h5" >/dev/null
for opt in sam ssam; do
  landscape surface "$samples/mlp_digits_$opt.pt" --1d --dirs "file:$work/sgd1d.h5" --device cpu --quiet \
    --out "$work/${opt}1d.h5" >/dev/null
done
landscape plot "$work/sgd1d.h5" "$work/sam1d.h5" "$work/ssam1d.h5" --label sgd --label sam --label ssam \
  --out surface1d_sgd_sam_ssam.png --overwrite >/dev/null

# The training path on its PCA plane.
landscape surface "$work/run/final.pt" --2d --dirs "pca:$work/run" --device cpu --quiet --out "$work/pca.h5" >/dev/null
landscape plot "$work/pca.h5" --kind filled --out trajectory_pca.png --overwrite >/dev/null

# The training log: loss, accuracy and sharpness against step.
landscape plot "$work/run" --out train_log.png --overwrite >/dev/null
ls -1 ./*.png
