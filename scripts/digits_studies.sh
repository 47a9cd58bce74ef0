#!/usr/bin/env bash
# Every digits study (experiment=demo) whose tables are in the docs, into OUT (default studies/), one CPU thread per
# run; then the blocks they write are regenerated. Resumable: each part skips the runs it finished, so calling it
# again after an interruption goes on where it stopped.
#   scripts/digits_studies.sh [OUT]
# The parts (each block's page names it):
#   digits_heldout/heldout_{a,b,c,d}   FIP, its ablation and fine-tuning on the 24 held-out settings (docs/digits.md, README)
#   digits_every_step/heldout_{a,b,c,d} FIP with its suppressor on every step instead of every fifth (docs/digits.md)
#   benchmark_demo, benchmark_demo_one_shot  every defense on the benchmark's two models; five with one image per class
#   digits_tuning_fast_fip              Fast FIP's step size, optimiser and weights on the tuning model (docs/defenses.md)
#   digits_curvature/{premise,seeds}    lambda_max and trace of benign, backdoored and purified models (docs/curvature.md)
# Every backdoored model is trained once into OUT/digits_models (their weights stay out of git, as all under studies/).
# EXTRA: overrides for every run (EXTRA=debug=fast checks the script in minutes, into another OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PY=${PY:-.venv/bin/python}
OUT=${1:-studies}
read -r -a extra <<<"${EXTRA:-}"
cache=(paths.model_cache=$OUT/digits_models "${extra[@]}")
quiet() { "$@" >/dev/null; }

for set in a b c d; do
  quiet env SETTINGS=scripts/study_settings/heldout_$set.txt scripts/purification_study.sh "$OUT/digits_heldout/heldout_$set" "${cache[@]}"
  quiet env SETTINGS=scripts/study_settings/heldout_$set.txt DEFENSES=fip \
    scripts/purification_study.sh "$OUT/digits_every_step/heldout_$set" "${cache[@]}" defense.suppressor_every=1
done

quiet scripts/defense_benchmark.sh "$OUT/benchmark_demo" "${cache[@]}"
quiet env DEFENSES=fip,ft,fast_fip,nft,nft_no_mixup scripts/defense_benchmark.sh "$OUT/benchmark_demo_one_shot" "${cache[@]}" \
  defense.samples_per_class=1

fast_fip() {  # sweep name, overrides ...: Fast FIP on the tuning model (BadNets seed 0)
  local name=$1
  shift
  quiet $PY -m backdoorlab.purify -m experiment=demo attack=badnets seed=0 defense=fast_fip logger=none \
    trainer.enable_progress_bar=false "${cache[@]}" "hydra.sweep.dir=$OUT/digits_tuning_fast_fip/$name" "$@"
}
fast_fip sgd defense.eta_f=0.01 defense.steps=600 defense.lr=0.05,0.5,2.0
fast_fip lr1 defense.eta_f=0.01 defense.lr=1.0 defense.steps=600,200
fast_fip adam defense.eta_f=0.01 defense.steps=200 defense.optimizer=adam defense.lr=0.01,0.03
fast_fip etar defense.eta_f=0.01 defense.steps=200 defense.lr=1.0 defense.eta_r=20,50
fast_fip etaf defense.steps=200 defense.lr=0.5 defense.eta_f=0.05,0.2
fast_fip etaf2 defense.steps=200 defense.lr=0.5 defense.eta_f=0.05,0.1 defense.eta_r=20

curvature="$OUT/digits_curvature"
for seed in 0 1 2; do  # benign models, the reference of the premise
  quiet $PY -m backdoorlab.train experiment=demo attack=benign seed=$seed logger=none trainer.enable_progress_bar=false \
    "hydra.run.dir=$curvature/models/digits-benign-seed$seed" "${extra[@]}"
done
model() { ls -d "$OUT"/digits_models/digits-"$1"-seed"$2"-*/ | head -1; }  # a cached model by attack and seed
job() { ls -d "$OUT/benchmark_demo/$1/$2"/*/ | head -1; }                  # a benchmark run by model and defense
quiet scripts/curvature_premise.sh "$curvature/premise" "$curvature/models/digits-benign-seed0" \
  "$(model badnets 260)" "$(model blend 279)" "$(job badnets-seed260 fip)" "$(job badnets-seed260 ft)" \
  "$(job blend-seed279 fip)" "$(job blend-seed279 ft)" -- "${extra[@]}"
quiet scripts/curvature_premise.sh "$curvature/seeds" "$curvature/models/digits-benign-seed1" \
  "$curvature/models/digits-benign-seed2" "$(model badnets 1)" "$(model badnets 2)" "$(model blend 1)" \
  "$(model blend 2)" "$(model badnets 0)" -- analysis.esd=false "${extra[@]}"

if [[ -z ${EXTRA:-} ]]; then
  $PY -m backdoorlab.report --regenerate README.md docs/digits.md docs/defenses.md docs/curvature.md
fi
