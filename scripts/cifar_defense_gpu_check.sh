#!/usr/bin/env bash
# Issue 9's defenses on a GPU, on the experiment=cifar_cpu_v1 models already trained here (carried as run directories):
#   1. wall time of each defense on the CIFAR-10 benchmark's BadNets model (FIP / ANP and Fast FIP / FIP as on the papers' GPUs);
#   2. Fast FIP's and NFT's settings on the two CIFAR-10 tuning models (seed 0), never on held-out ones.
#   SHARED=<folder holding data/cifar10-jpeg.tar.gz> scripts/cifar_defense_gpu_check.sh [OUT_DIR]
# MODELS: the folder of trained runs (default outputs/models); STAGE_TIMEOUT: seconds allowed per stage; STAGES: the
# stages to run (default: all; the second H200 call of issue 9 ran STAGES="nft_blend fast_fip_retainer").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_defenses}
PY=${PY:-python3}
MODELS=${MODELS:-outputs/models}
common=(experiment=cifar_cpu_v1 trainer=gpu logger=none trainer.enable_progress_bar=false)
[[ -n ${SHARED:-} ]] && common+=("paths.shared_dir=$SHARED")
model() { ls -d "$MODELS"/cifar10_jpeg-"$1"-seed"$2"-* | head -1; }
tuning="$(model badnets 0),$(model blend 0)"
mkdir -p "$OUT"
stage() {
  local name=$1 start; shift
  [[ " ${STAGES:-timing fast_fip nft nft_blend fast_fip_retainer} " == *" $name "* ]] || return 0
  start=$(date +%s)
  timeout "${STAGE_TIMEOUT:-100000}" $PY -m backdoorlab.purify -m "${common[@]}" "hydra.sweep.dir=$OUT/$name" "$@" >"$OUT/$name.log" 2>&1
  echo "$name: exit $? after $(( $(date +%s) - start )) s"
}
stage timing "checkpoint=$(model badnets 101)" defense=ft,fip,fast_fip,anp,nft,fip_no_suppressor
stage fast_fip "checkpoint=$tuning" defense=fast_fip defense.steps=200 defense.lr=0.5,1.0 defense.eta_f=0.005,0.05
stage nft "checkpoint=$tuning" defense=nft_no_mixup,nft defense.mask_l1=0.01,0.02 defense.lr=0.02,0.05,0.1
stage nft_blend "checkpoint=$(model blend 0)" defense=nft_no_mixup defense.mask_l1=0.01,0.02 defense.lr=0.05,0.1
stage fast_fip_retainer "checkpoint=$tuning" defense=fast_fip defense.steps=200 defense.eta_f=0.05 defense.lr=0.2,0.5 defense.eta_r=20
$PY -m backdoorlab.report "$OUT"
