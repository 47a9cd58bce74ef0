#!/usr/bin/env bash
# experiment=cifar_paper on a GPU: the training speed of the framework against a plain loop (scripts/bench_train.py),
# then one BadNets and one Blend model (seed 0, target 0), each purified with FIP, fine-tuning on FIP's budget and
# FIP's ablation, then one table. BENCH=0 skips the speed stage.
#   EPOCHS=100 scripts/cifar_paper_check.sh [OUT_DIR]      # EPOCHS shortens the papers' 100 epochs
# SHARED: the folder holding data/cifar10-jpeg.tar.gz (default: the shared folder beside the project);
# STAGE_TIMEOUT: seconds allowed per attack (training and its purifications), so that a slow machine
# still returns the other attack's results.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/cifar_paper}
PY=${PY:-python3}
EPOCHS=${EPOCHS:-100}
extra=(experiment=cifar_paper "training.epochs=$EPOCHS" logger=none trainer.enable_progress_bar=false)
[[ -n ${SHARED:-} ]] && extra+=("paths.shared_dir=$SHARED")
mkdir -p "$OUT"
if [[ ${BENCH:-1} != 0 ]]; then
  bench=(--device cuda --experiment cifar_paper --width 64 --steps 300 --warmup 30 --defense-steps 20)
  [[ -n ${SHARED:-} ]] && bench+=(--override "paths.shared_dir=$SHARED")
  for batch in 128 512; do
    timeout "${STAGE_TIMEOUT:-100000}" $PY scripts/bench_train.py "${bench[@]}" --batch $batch \
      --modes fp32,bf16_cl,bf16_cl_compile >"$OUT/bench_batch$batch.log" 2>&1
    echo "bench batch $batch: exit $?"; grep -A12 '^cuda,' "$OUT/bench_batch$batch.log"
  done
fi
for attack in badnets blend; do
  start=$(date +%s)
  timeout "${STAGE_TIMEOUT:-100000}" $PY -m backdoorlab.purify -m "${extra[@]}" "attack=$attack" seed=0 \
    defense=fip,ft,fip_no_suppressor "hydra.sweep.dir=$OUT/$attack" >"$OUT/$attack.log" 2>&1
  echo "$attack: exit $? after $(( $(date +%s) - start )) s"
done
$PY -m backdoorlab.report "$OUT"
$PY -m backdoorlab.report outputs/models --view models --dataset cifar10_jpeg
