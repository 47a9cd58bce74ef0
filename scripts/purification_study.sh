#!/usr/bin/env bash
# Purify digits models under several (attack, seed, target label, trigger position) settings with
# FIP, its no-suppressor ablation and fine-tuning on the same budget, then print one table.
#   scripts/purification_study.sh [OUT_DIR] [extra Hydra overrides for every run ...]
# Backdoored models are trained once and cached in outputs/models/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/study/$(date +%Y-%m-%d_%H-%M-%S)}
shift || true
PY=${PY:-.venv/bin/python}  # may hold a command with arguments, e.g. "env VAR=... python"
mkdir -p "$OUT/logs"
# attack seed target position: none of these is the demo default (seed 0, target 0, bottom_right).
SETTINGS=(
  "badnets 1 3 top_left"
  "badnets 2 7 top_right"
  "badnets 3 9 bottom_left"
  "badnets 4 5 bottom_right"
  "blend 1 4 -"
  "blend 2 8 -"
  "blend 3 1 -"
)
DEFENSES=${DEFENSES:-fip,fip_no_suppressor,ft}
for setting in "${SETTINGS[@]}"; do
  read -r attack seed target position <<<"$setting"
  extra=()
  [[ $position != - ]] && extra+=("attack.position=$position")
  $PY -m backdoorlab.purify -m experiment=demo "attack=$attack" "seed=$seed" "attack.target_label=$target" \
    "${extra[@]}" "defense=$DEFENSES" logger=none trainer.enable_progress_bar=false \
    "hydra.sweep.dir=$OUT/$attack-seed$seed" "$@" >"$OUT/logs/$attack-seed$seed.log" 2>&1 || {
      echo "failed: $setting (log: $OUT.log.$attack-seed$seed)"; exit 1; }
done
$PY scripts/results_table.py "$OUT"
