#!/usr/bin/env bash
# Purify models under several (attack, seed, target label, trigger position) settings with FIP, its
# no-suppressor ablation and fine-tuning on the same budget, then print one table.
#   scripts/purification_study.sh [OUT_DIR] [extra Hydra overrides for every run ...]
# SETTINGS names the file of settings (default scripts/study_settings/heldout_a.txt); DEFENSES the
# defense configs to compare (default fip,fip_no_suppressor,ft); PURIFY_SEEDS, e.g. 0,1,2, purifies
# every model once per purification seed (default: one run with the model's seed); EXPERIMENT the
# protocol (default demo: digits; cifar_cpu: CIFAR-10 on two CPU cores).
# Backdoored models are trained once and cached in outputs/models/.
# Every run uses one CPU thread unless OMP_NUM_THREADS says otherwise: the README's tables were made
# so (two studies side by side fill two cores), and float results depend on the thread count.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
OUT=${1:-outputs/study/$(date +%Y-%m-%d_%H-%M-%S)}
shift || true
PY=${PY:-.venv/bin/python}  # may hold a command with arguments, e.g. "env VAR=... python"
mkdir -p "$OUT/logs"
DEFENSES=${DEFENSES:-fip,fip_no_suppressor,ft}
SETTINGS=${SETTINGS:-scripts/study_settings/heldout_a.txt}
grep -v '^#' "$SETTINGS" | while read -r attack seed target position; do
  [[ -z $attack ]] && continue
  setting="$attack $seed $target $position"
  extra=()
  [[ $position != - ]] && extra+=("attack.position=$position")
  [[ -n ${PURIFY_SEEDS:-} ]] && extra+=("purification_seed=$PURIFY_SEEDS")
  $PY -m backdoorlab.purify -m "experiment=${EXPERIMENT:-demo}" "attack=$attack" "seed=$seed" "attack.target_label=$target" \
    "${extra[@]}" "defense=$DEFENSES" logger=none trainer.enable_progress_bar=false \
    "hydra.sweep.dir=$OUT/$attack-seed$seed" "$@" </dev/null >"$OUT/logs/$attack-seed$seed.log" 2>&1 || {
      echo "failed: $setting (log: $OUT/logs/$attack-seed$seed.log)"; exit 1; }
done
$PY scripts/results_table.py "$OUT"
