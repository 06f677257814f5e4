#!/usr/bin/env bash
# The spatial record recipe in PyTorch on a device machine's GPU (issue 11: the PyTorch run beside
# the svd-train one), in two calls of the device tool, because CIFAR-10 only travels in two parts:
#
#   here, once:  /usr/bin/python3 scripts/device/cifar_pack.py pack ../shared/cifar-10-batches-bin .device --parts 2
#                (.device/ must be ignored: echo /.device/ >> .git/info/exclude)
#   call 1:      run(carry [".device/part1"], command "bash scripts/device/torch-recipe.sh .device/part1")
#   call 2, within the 30 s the machine stays warm:
#                run(carry [".device/part2"], command "SEEDS='0 1 2' bash scripts/device/torch-recipe.sh .device/part2")
#
# The tracked docs/results (188 MiB) is over the 64 MiB a call may carry: untrack it for the calls
# (git rm -r -q --cached docs/results; echo /docs/results/ >> .git/info/exclude), and put it back after
# (git reset -q -- docs/results, and drop that line again).
#
# Each seed's log comes back as $OUT/seedS.log, one line per epoch; its checkpoints (resumable with
# the same command; PYTHON, DEVICE, CUDA_GRAPHS= and EXTRA='--limit-train 256' try it on a CPU) as $OUT/ckpt-seedS.tgz (about 7 MB each: at most 8 files come back, 16 MiB each). BUDGET_S (default 540) stops the runs in time for the tar.
set -u
out=${OUT:-/tmp/out}
data=/root/cifar
ck=/root/torch-ck
mkdir -p "$out" "$ck"
python3 scripts/device/cifar_pack.py unpack "$@" "$data" || exit 1
[ -n "${SEEDS:-}" ] || exit 0
for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
  [ -f "$data/$f.bin" ] || { echo "$data/$f.bin is missing: run call 1 (part1) first, within the 30 s the machine stays warm"; exit 1; }
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader
for s in $SEEDS; do
  PYTHONUNBUFFERED=1 timeout "${BUDGET_S:-540}" "${PYTHON:-python3}" bench/torch_train.py --data "$data" --device "${DEVICE:-cuda}" ${CUDA_GRAPHS---cuda-graphs} \
    --plain-epochs 40 --decomposition spatial --distill-alpha 0.7 --distill-temperature 4 --distill-training \
    --lambda-s 0.035 --lr 0.05 --epochs 8 --prune-macs 13.6e6 --finetune-epochs 95 --finetune-lr 0.02 \
    --finetune-average 5 --cutout 8 --seed "$s" --checkpoint "$ck/seed$s.pt" ${EXTRA:-} >"$out/seed$s.log" 2>&1 &
done
wait
for s in $SEEDS; do
  files=$(cd "$ck" && ls "seed$s".pt* 2>/dev/null)
  [ -n "$files" ] && tar czf "$out/ckpt-seed$s.tgz" -C "$ck" $files
done
tail -n 3 "$out"/seed*.log
