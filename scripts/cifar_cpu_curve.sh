#!/usr/bin/env bash
# The width x epochs curve behind experiment=cifar_cpu: one model per (width, epochs) point under the protocol's
# recipe, trained one after another (two threads, nothing else running: the times are the protocol's), then one table.
#   POINTS="16x30 20x20 24x14" ATTACK=blend scripts/cifar_cpu_curve.sh [OUT_DIR] [extra Hydra overrides ...]
# The setting is the tuning model's (seed 0, target 0): the protocol is chosen on it, never on held-out models.
# Started again, it skips finished points and continues an interrupted one from its last finished epoch.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
cd "$(dirname "$0")/.."
OUT=${1:-outputs/curve}
shift || true
PY=${PY:-.venv/bin/python}
ATTACK=${ATTACK:-blend}
mkdir -p "$OUT"
for point in ${POINTS:-16x30 20x20 24x14}; do
  width=${point%x*} epochs=${point#*x}
  dir=$OUT/$ATTACK-w$width-e$epochs
  [[ -f $dir/metrics.json ]] && continue
  echo "training $dir"
  $PY -m backdoorlab.train experiment=cifar_cpu "attack=$ATTACK" seed=0 attack.target_label=0 "model.width=$width" \
    "training.epochs=$epochs" logger=none trainer.enable_progress_bar=false "hydra.run.dir=$dir" "$@" \
    </dev/null >"$OUT/$ATTACK-w$width-e$epochs.log" 2>&1 || { echo "failed: $dir (log: $dir.log)"; exit 1; }
done
$PY -m backdoorlab.report "$OUT" --view models
