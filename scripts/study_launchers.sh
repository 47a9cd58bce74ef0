#!/usr/bin/env bash
# The study workflow measured (docs/studies.md): experiment=study_digits run serially (one process, all cores) and
# through Hydra's joblib launcher (two processes, one thread each), each from an empty model cache; the finished
# study run again (every job skipped); two job directories deleted and the study run again (exactly those two run);
# and four of its jobs through submitit_local beside the basic launcher at one thread (same metrics). Prints the
# wall times and their ratios. Needs an otherwise idle machine: the ratios are what it measures.
#   scripts/study_launchers.sh [OUT] (default outputs/study_launchers)
# EXTRA: overrides for every sweep (EXTRA=debug=fast checks the script in a minute).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/study_launchers}
PY=${PY:-.venv/bin/python}
rm -rf "$OUT"
mkdir -p "$OUT"
cores=$($PY -c "import os; print(len(os.sched_getaffinity(0)))")  # nproc would read OMP_NUM_THREADS

run() {  # name, overrides ...: one sweep, its wall time in seconds into $OUT/<name>.s, its log into $OUT/<name>.log
  local name=$1 start
  shift
  start=$SECONDS
  $PY -m backdoorlab.purify -m experiment=study_digits logger=none trainer.enable_progress_bar=false "$@" ${EXTRA:-} >"$OUT/$name.log" 2>&1
  echo $((SECONDS - start)) >"$OUT/$name.s"
  echo "$name: $(cat "$OUT/$name.s") s"
}

run serial "hydra.sweep.dir=$OUT/serial" "paths.model_cache=$OUT/serial_models" "threads=$cores"
run joblib "hydra.sweep.dir=$OUT/joblib" "paths.model_cache=$OUT/joblib_models" hydra/launcher=joblib hydra.launcher.n_jobs=2
run rerun "hydra.sweep.dir=$OUT/joblib" "paths.model_cache=$OUT/joblib_models" hydra/launcher=joblib hydra.launcher.n_jobs=2
deleted=$(find "$OUT/joblib" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*' | sort | sed -n '3p;17p')
rm -rf $deleted
run after_delete "hydra.sweep.dir=$OUT/joblib" "paths.model_cache=$OUT/joblib_models" hydra/launcher=joblib hydra.launcher.n_jobs=2
subset=("setting=digits_badnets_1,digits_blend_1" "defense=fip,ft" "threads=1" "paths.model_cache=$OUT/joblib_models")
run basic_subset "hydra.sweep.dir=$OUT/basic_subset" "${subset[@]}"
run submitit_subset "hydra.sweep.dir=$OUT/submitit_subset" "${subset[@]}" hydra/launcher=submitit_local

skipped() { grep -c "holds a finished run of this config: skipped" "$OUT/$1.log" || true; }
echo
echo "cores: $cores; jobs: $(find "$OUT/joblib" -name job.json | wc -l)"
ratio() { $PY -c "print(f'{$(cat "$OUT/$1.s") / max($(cat "$OUT/$2.s"), 1):.3f}')"; }
echo "joblib / serial wall time: $(ratio joblib serial)"
echo "rerun / first joblib run: $(ratio rerun joblib) ($(skipped rerun) jobs skipped)"
echo "after deleting $(echo "$deleted" | wc -w) job directories: $(skipped after_delete) skipped, $(cat "$OUT/after_delete.s") s"
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
def metrics(sweep):
    return {p.name: json.loads((p / "metrics.json").read_text())["after"] for p in sorted((out / sweep).iterdir()) if (p / "metrics.json").is_file()}
basic, submitit = metrics("basic_subset"), metrics("submitit_subset")
same = basic == submitit and len(basic) == 4
print(f"submitit_local vs basic launcher, 4 jobs at one thread: {'identical metrics' if same else 'DIFFERENT: ' + str((basic, submitit))}")
EOF
$PY -m backdoorlab.report "$OUT/serial" "$OUT/joblib" --out "$OUT/report" >/dev/null
echo "report: $OUT/report"
