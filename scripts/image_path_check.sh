#!/usr/bin/env bash
# The image path unchanged by a change of the shared code (docs/points.md): the same runs at BASE and at the
# working tree's code, compared bit for bit. Digits: two drawn models of experiment=study_digits (BadNets seed 1,
# Blend seed 1) trained from an empty cache and purified by FIP and fine-tuning; CIFAR-10: a committed cifar_cpu
# model evaluated and fine-tuned for a few steps. One thread everywhere: results depend on the thread count.
#   scripts/image_path_check.sh [BASE] (default a43fe6f, the last commit before the task abstraction of issue 21)
# Prints, per run, whether the metrics and the weights are identical; exits non-zero where any differ.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BASE=${1:-a43fe6f}
OUT=$ROOT/outputs/image_path_check
PY=${PY:-$ROOT/.venv/bin/python}
CIFAR_MODEL=${CIFAR_MODEL:-zoo/cifar_cpu/cifar10_jpeg-badnets-seed101-f2b0129dbc65}
SHARED=$(cd "$ROOT/.." && pwd)/shared
rm -rf "$OUT"
mkdir -p "$OUT"
git worktree add --force --detach "$OUT/base_code" "$BASE" >/dev/null 2>&1
trap 'git worktree remove --force "$OUT/base_code"' EXIT

runs() {  # code root, name: the runs with that code, into $OUT/<name>
  local code=$1 name=$2
  local common=(threads=1 logger=none trainer.enable_progress_bar=false "paths.root_dir=$OUT/$name" "paths.shared_dir=$SHARED"
                "paths.data_dir=$ROOT/data")
  (cd "$code" && PYTHONPATH="$code/src" $PY -m backdoorlab.purify -m experiment=study_digits \
     setting=digits_badnets_1,digits_blend_1 defense=fip,ft "paths.model_cache=$OUT/$name/models" \
     "hydra.sweep.dir=$OUT/$name/digits" "${common[@]}") >"$OUT/$name.log" 2>&1
  (cd "$code" && PYTHONPATH="$code/src" $PY -m backdoorlab.purify experiment=cifar_cpu "checkpoint=$ROOT/$CIFAR_MODEL" \
     defense=ft defense.steps=20 "hydra.run.dir=$OUT/$name/cifar/0-ft" "${common[@]}") >>"$OUT/$name.log" 2>&1
  echo "$name: done"
}

runs "$OUT/base_code" base
runs "$ROOT" head
$PY - "$OUT" <<'EOF'
import filecmp, json, sys
from pathlib import Path
out, same = Path(sys.argv[1]), True
for sweep in ("digits", "cifar"):
    for job in sorted(p for p in (out / "base" / sweep).iterdir() if (p / "metrics.json").is_file()):
        other = out / "head" / sweep / job.name
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (job, other))
        metrics = all(a[k] == b[k] for k in ("before", "after"))
        weights = filecmp.cmp(job / "model.safetensors", other / "model.safetensors", shallow=False)
        same &= metrics and weights
        print(f"{sweep}/{job.name}: ACC/ASR before {a['before']['acc']:.2f}/{a['before'].get('asr', float('nan')):.2f} "
              f"after {a['after']['acc']:.2f}/{a['after'].get('asr', float('nan')):.2f}; metrics "
              f"{'identical' if metrics else 'DIFFER: ' + str((a['after'], b['after']))}, weights {'identical' if weights else 'DIFFER'}")
for model in sorted(p for p in (out / "base" / "models").iterdir() if p.is_dir()):
    identical = filecmp.cmp(model / "model.safetensors", out / "head" / "models" / model.name / "model.safetensors", shallow=False)
    same &= identical
    print(f"trained {model.name}: weights {'identical' if identical else 'DIFFER'}")
sys.exit(0 if same else 1)
EOF
