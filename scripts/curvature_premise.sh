#!/usr/bin/env bash
# FIP's premise, measured: lambda_max and the Hessian trace (python -m backdoorlab.analyze, its default protocol: 200
# clean training images) of every run directory given (trained models, and purified ones), then one table.
#   scripts/curvature_premise.sh OUT_DIR RUN_DIR [RUN_DIR ...] [-- extra analyze overrides]
# One CPU thread per analysis unless OMP_NUM_THREADS says otherwise.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=$1; shift
dirs=()
while [[ $# -gt 0 && $1 != -- ]]; do dirs+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
mkdir -p "$OUT/logs"
for dir in "${dirs[@]}"; do
  name=$(echo "${dir%/}" | sed 's#^outputs/##; s#^studies/##; s#/#_#g')
  $PY -m backdoorlab.analyze "checkpoint=$dir" "hydra.run.dir=$OUT/$name" "$@" </dev/null >"$OUT/logs/$name.log" 2>&1 || {
    echo "failed: $dir (log: $OUT/logs/$name.log)"; exit 1; }
done
$PY -m backdoorlab.report "$OUT" --view curvature
