#!/usr/bin/env bash
# Every defense on the same models, the same clean pool and the same step budget, then one table: ACC, ASR, wall time as a
# ratio to FIP's on the same model, peak memory and trainable size.
#   scripts/defense_benchmark.sh [OUT_DIR] [extra Hydra overrides for every run ...]
# EXPERIMENT: demo (digits, default), cifar_cpu or cifar_cpu_v1; SETTINGS: the models (default scripts/study_settings/benchmark_$EXPERIMENT.txt);
# DEFENSES: the defense configs (default: all of them). One CPU thread per run unless OMP_NUM_THREADS says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
export EXPERIMENT=${EXPERIMENT:-demo}
OUT=${1:-outputs/benchmark/$EXPERIMENT}
shift || true
export SETTINGS=${SETTINGS:-scripts/study_settings/benchmark_${EXPERIMENT%_v1}.txt}  # cifar_cpu_v1 runs cifar_cpu's models
export DEFENSES=${DEFENSES:-fip,fip_no_suppressor,fast_fip,nft,nft_no_mixup,ft,ft_sam,anp,awm,i_bau,rnp,fp,nad}
scripts/purification_study.sh "$OUT" "$@" >/dev/null
${PY:-.venv/bin/python} -m backdoorlab.report "$OUT" --view benchmark
