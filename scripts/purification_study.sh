#!/usr/bin/env bash
# Purify models under several (attack, seed, target label, trigger position) settings with FIP, its
# no-suppressor ablation and fine-tuning on the same budget, then print one table.
#   scripts/purification_study.sh [OUT_DIR] [extra Hydra overrides for every run ...]
# SETTINGS names the file of settings (default scripts/study_settings/heldout_a.txt); DEFENSES the
# defense configs to compare (default fip,fip_no_suppressor,ft); PURIFY_SEEDS, e.g. 0,1,2, purifies
# every model once per purification seed (default: one run with the model's seed); EXPERIMENT the
# protocol (default demo: digits; cifar_cpu: CIFAR-10 on two CPU cores).
# Backdoored models are trained once and cached in paths.model_cache (default outputs/models/; the
# CIFAR-10 studies' models are committed under zoo/, see zoo/README.md).
# A settings line is "attack seed target position [override ...]": the overrides (e.g. attack.label_mode=all2all)
# apply to that model only and their values name its folder (<attack>-seed<seed>-all2all).
# Resumable: each (setting, defense) runs into OUT_DIR/<attack>-seed<seed>/<defense>/ and is skipped
# when that folder holds a .done mark from an earlier call, so an interrupted study goes on where it
# stopped when called again with the same arguments.
# In the extra overrides, @SETTING@ stands for the model's folder name (<attack>-seed<seed>[-...]), e.g. to prune each
# model by the masks its own ANP run saved: DEFENSES=prune_masks ... defense.masks=<anp study>/@SETTING@/anp.
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
grep -v '^#' "$SETTINGS" | while read -r attack seed target position overrides; do
  [[ -z $attack ]] && continue
  extra=() name=$attack-seed$seed
  [[ $position != - ]] && extra+=("attack.position=$position")
  for override in $overrides; do extra+=("$override") name+="-${override#*=}"; done
  [[ -n ${PURIFY_SEEDS:-} ]] && extra+=("purification_seed=$PURIFY_SEEDS")
  for defense in ${DEFENSES//,/ }; do
    dir="$OUT/$name/$defense" log="$OUT/logs/$name-$defense.log"
    [[ -f $dir/.done ]] && continue
    $PY -m backdoorlab.purify -m "experiment=${EXPERIMENT:-demo}" "attack=$attack" "seed=$seed" "attack.target_label=$target" \
      "${extra[@]}" "defense=$defense" logger=none trainer.enable_progress_bar=false \
      "hydra.sweep.dir=$dir" "${@//@SETTING@/$name}" </dev/null >"$log" 2>&1 || {
        echo "failed: $attack $seed $target $position ${overrides:+$overrides }$defense (log: $log)"; exit 1; }
    touch "$dir/.done"
  done
done
$PY -m backdoorlab.report "$OUT"
