#!/usr/bin/env bash
# Regenerates the four Gaussian-mixture figures (paper Figs. 18-21) with
# experiments/gaussian_mixture.py, one output directory per figure:
#   OUT_ROOT/fig18_d_input, fig19_d_hidden, fig20_weight_decay, fig21_tau2
#   (each holds results.json and gaussian_mixture_<vary>.png).
#
# Usage: experiments/gaussian_mixture_figures.sh [--quick] [OUT_ROOT] [extra flags...]
#   default   paper sizes: d_input = d_hidden = 512, 10 seeds, 1,000 steps,
#             d_input / d_hidden in {128, 256, 512, 1024} (GPU; ~30 s per run on CPU)
#   --quick   reduced CPU sweep: base d = 64, d in {16, 32, 64, 128}, 3 seeds
#             (16 min in total measured on a shared 2-core CPU)
#   extra flags are passed to every run (e.g. --steps 300 --batch-size 64).
# PYTHON selects the interpreter (default: python). OUT_ROOT defaults to runs/gaussian_mixture.
set -euo pipefail

QUICK=0
if [[ "${1:-}" == "--quick" ]]; then QUICK=1; shift; fi
OUT_ROOT="${1:-runs/gaussian_mixture}"
if [[ $# -gt 0 ]]; then shift; fi
PY="${PYTHON:-python}"
SCRIPT="$(dirname "$0")/gaussian_mixture.py"

if [[ $QUICK == 1 ]]; then
  COMMON=(--d-input 64 --d-hidden 64 --seeds 3)
  DVALS=(16 32 64 128)
else
  COMMON=()
  DVALS=(128 256 512 1024)
fi

run() {  # run NAME ARGS...
  local name="$1"; shift
  echo "== ${name}" >&2
  "$PY" "$SCRIPT" "${COMMON[@]}" "$@" --out "${OUT_ROOT}/${name}"
}

run fig18_d_input      --vary d_input      --values "${DVALS[@]}" "$@"
run fig19_d_hidden     --vary d_hidden     --values "${DVALS[@]}" "$@"
run fig20_weight_decay --vary weight_decay --values 0 1e-4 1e-3 1e-2 "$@"
run fig21_tau2         --vary tau2         --sigma2 4 "$@"
