#!/usr/bin/env bash
# Every CUDA check in one call, for a session that is lent a GPU machine (never in CI).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default: $OUT (the device tool's folder) or gpu-check/
#
# Runs, each under its own time limit so the whole stays under ~8 minutes:
#   1. the CUDA tests (pytest -m gpu), junit XML + log;
#   2. bench_smoothing_device.py: the smoothing stage, numpy vs torch CPU vs CUDA, 6 km tile (tiles/s);
#   3. bench_whittaker.py --quick: the Whittaker kernel, numba vs torch (CUDA when present);
#   4. bench_blending.py --device cuda: Gaussian-blended inference fp32 and bf16 autocast (px/s, fraction of peak);
#   5. bench_asos.py: ASOS map vs one forward pass and vs Captum occlusion (the device torch picks by default: CPU);
#   6. bench_superres.py --device cuda: super-resolution of one tile-date;
#   7. nvidia-smi and the torch/CUDA versions.
# Everything goes under OUT_DIR: <step>.log, the benchmarks' JSON, summary.txt (exit status per step).
# Assumes the set-up ran (`bash infra/setup.sh --test`; on a CUDA machine install a CUDA torch wheel).
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu-check}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
SUMMARY="$OUT_DIR/summary.txt"
: > "$SUMMARY"

step() {  # step NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $(( $(date +%s) - t0 ))s" | tee -a "$SUMMARY"
}

{ nvidia-smi || true; "$PY" -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.is_available())"; } > "$OUT_DIR/device.txt" 2>&1
step tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs --junitxml="$OUT_DIR/tests.xml"
step smoothing 90 "$PY" benchmarks/bench_smoothing_device.py --out "$OUT_DIR"
step whittaker 60 "$PY" benchmarks/bench_whittaker.py --quick
step blending 60 "$PY" benchmarks/bench_blending.py --device cuda
step asos 45 "$PY" benchmarks/bench_asos.py
step superres 45 "$PY" benchmarks/bench_superres.py --device cuda
cp benchmarks/results/bench_whittaker.json benchmarks/results/bench_asos.json \
   benchmarks/results/bench_superres.json "$OUT_DIR/" 2>/dev/null
cp benchmarks/results/bench_blending*.json "$OUT_DIR/" 2>/dev/null
echo "results in $OUT_DIR" | tee -a "$SUMMARY"
