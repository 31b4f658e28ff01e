#!/usr/bin/env bash
# Rebuilds every checkpoint in this folder with the built-in trainer (deterministic on CPU).
set -euo pipefail
cd "$(dirname "$0")"
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT

landscape train --model mlp --model-arg 'widths=[64,32,10]' --model-arg activation=tanh \
  --data digits --lr 0.1 --momentum 0.9 --weight-decay 5e-4 --batch-size 64 --epochs 20 \
  --seed 0 --device cpu --out "$runs/mlp" --quiet
cp "$runs/mlp/final.pt" mlp_digits.pt

# The same model and schedule with SAM and SSAM (rho 0.05), for sharpness comparisons.
for opt in sam ssam; do
  landscape train --model mlp --model-arg 'widths=[64,32,10]' --model-arg activation=tanh \
    --data digits --opt "$opt" --rho 0.05 --lr 0.1 --momentum 0.9 --weight-decay 5e-4 --batch-size 64 \
    --epochs 20 --seed 0 --device cpu --out "$runs/mlp_$opt" --quiet
  cp "$runs/mlp_$opt/final.pt" "mlp_digits_$opt.pt"
done

landscape train --model cnn --model-arg 'channels=[8,16]' \
  --data digits --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --batch-size 64 --epochs 10 \
  --seed 0 --device cpu --out "$runs/cnn" --quiet
cp "$runs/cnn/final.pt" cnn_digits.pt

landscape train --model resnet --model-arg width=8 \
  --data digits --lr 0.05 --momentum 0.9 --weight-decay 5e-4 --batch-size 64 --epochs 10 \
  --seed 0 --device cpu --out "$runs/resnet" --quiet
cp "$runs/resnet/final.pt" resnet_digits.pt

ls -l ./*.pt
