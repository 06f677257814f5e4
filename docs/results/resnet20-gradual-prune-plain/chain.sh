#!/bin/bash
# Gradual pruning from the decomposed plain ResNet-20: prune to a MAC budget, train a few distilled epochs, repeat.
set -euo pipefail
cd "$(dirname "$0")/../../.."   # the repository root
P=docs/results/resnet20-plain-50ep/trained.svdckpt
D=../shared/cifar-10-batches-bin
common="--spawn 2 --data $D --teacher $P --distill-alpha 0.7 --distill-temperature 4 --decay-on factors --checkpoint-every 391 --keep-checkpoints 40"
latest() { ls $1/checkpoints/*.svdckpt | sort | tail -1; }
mkdir -p runs/gp
pnpm -s svd-coord decompose $P --out runs/gp/plain-svd.svdckpt
pnpm -s svd-coord prune runs/gp/plain-svd.svdckpt --macs 28e6 --data $D --out runs/gp/p28.svdckpt
pnpm -s svd-coord eval runs/gp/p28.svdckpt --data $D | tail -1
prev=runs/gp/p28.svdckpt
i=1
for m in 21e6 16.5e6 13.6e6; do
  echo "== stage $i: train 3 epochs from $prev" ; date
  pnpm -s svd-coord start $common --from $prev --lambda-s 0.02 --lr 0.01 --epochs 3 --out runs/gp/s$i > runs/gp/s$i.log 2>&1
  c=$(latest runs/gp/s$i)
  echo "== prune $c to $m"; date
  pnpm -s svd-coord prune $c --macs $m --data $D --out runs/gp/p$i.svdckpt 2>&1 | grep -E "^--macs|whole model"
  pnpm -s svd-coord eval runs/gp/p$i.svdckpt --data $D 2>&1 | tail -1
  prev=runs/gp/p$i.svdckpt
  i=$((i+1))
done
echo "== final: 20 epochs from $prev"; date
pnpm -s svd-coord start $common --from $prev --lambda-s 0 --lambda-o 0.1 --weight-decay 1e-4 --lr 0.01 --epochs 20 --out runs/gp/final > runs/gp/final.log 2>&1
date; echo done
