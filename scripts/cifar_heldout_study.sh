#!/usr/bin/env bash
# The held-out CIFAR-10 study (docs/cifar10.md): every defense on the six held-out `cifar_cpu` models
# (scripts/study_settings/cifar_heldout.txt; the models are committed in zoo/cifar_cpu) at one budget, into
# studies/cifar_cpu_heldout/<budget>/, model by model (a model's defenses finish before the next model starts).
#   scripts/cifar_heldout_study.sh authors|shared [extra Hydra overrides for every run ...]
# FIP and its ablation also log lambda_max and the trace of the loss Hessian every CURVATURE_EVERY (100) steps, on
# a cheaper estimator than the analysis group's default (CURVATURE: 100 images, at most 30 power iterations,
# Hutch++ with 30 products), so that a 2000-step run measures 21 points in minutes, not an hour.
# SETTINGS: the models (default cifar_heldout.txt, e.g. one line of it to run one model); DEFENSES: the defenses
# other than FIP and its ablation (default: all of them). Resumable as purification_study.sh: call it again with
# the same arguments after an interruption. One CPU thread per run unless OMP_NUM_THREADS says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:?usage: scripts/cifar_heldout_study.sh authors|shared [overrides ...]}
shift
case $BUDGET in authors) every=500 ;; shared) every=200 ;; *) echo "budget must be authors or shared, got $BUDGET" >&2; exit 2 ;; esac
OUT=${OUT:-studies/cifar_cpu_heldout/$BUDGET}
SETTINGS=${SETTINGS:-scripts/study_settings/cifar_heldout.txt}
DEFENSES=${DEFENSES:-fast_fip,nft,nft_no_mixup,anp,rnp,ft,fp,nad,ft_sam,i_bau,awm}
CURVATURE=${CURVATURE:-analysis.samples=100 analysis.power_max_iter=30 analysis.trace=hutch++ analysis.trace_max_probes=30}
common=(budget="$BUDGET" eval_every=$every logger=csv trainer.log_every_n_steps=10 paths.model_cache=zoo/cifar_cpu)
one=$(mktemp)
trap 'rm -f "$one"' EXIT
grep -v '^#' "$SETTINGS" | while read -r line; do
  [[ -z $line ]] && continue
  echo "$line" >"$one"
  # shellcheck disable=SC2086  # CURVATURE is a list of overrides
  SETTINGS=$one EXPERIMENT=cifar_cpu DEFENSES=fip,fip_no_suppressor scripts/purification_study.sh "$OUT" "${common[@]}" \
    curvature_every_steps="${CURVATURE_EVERY:-100}" $CURVATURE "$@" >/dev/null
  SETTINGS=$one EXPERIMENT=cifar_cpu DEFENSES=$DEFENSES scripts/purification_study.sh "$OUT" "${common[@]}" "$@" >/dev/null
done
${PY:-.venv/bin/python} -m backdoorlab.report "$OUT"
