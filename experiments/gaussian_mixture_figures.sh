#!/usr/bin/env bash
# Regenerates the four Gaussian-mixture figures (paper Figs. 18-21) with
# experiments/gaussian_mixture.py, one output directory per figure:
#   OUT_ROOT/fig18_d_input, fig19_d_hidden, fig20_weight_decay, fig21_tau2
#   (each holds results.json and gaussian_mixture_<vary>.png).
#
# Usage: experiments/gaussian_mixture_figures.sh [--quick | --reduced] [OUT_ROOT] [extra flags...]
#   default    paper sizes: 8 x 500 samples, d_input = d_hidden = 512, 10 seeds, 1,000 steps,
#              d_input / d_hidden in {128, 256, 512, 1024}, the full sigma2 grid
#   --reduced  half the paper's widths on fewer samples and grid points: 8 x 100 samples,
#              base d = 256, d in {64, 128, 256, 512}, 3 seeds, sigma2 in {0, 0.5, 1, 2, 4, 16, 64}
#   --quick    small widths: base d = 64, d in {16, 32, 64, 128}, 3 seeds
#   extra flags are passed to every run (e.g. --parameterization ntk --input-scaling rms
#   --lr 2, --steps 300, --batch-size 64); each figure's title states the sizes it used.
# PYTHON selects the interpreter (default: python). OUT_ROOT defaults to runs/gaussian_mixture.
set -euo pipefail

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit 0
fi
case "${1:-}" in
  ""|--quick|--reduced) ;;
  -*) echo "error: gaussian_mixture_figures.sh: unknown option ${1} (use --quick, --reduced or --help)" >&2; exit 2 ;;
esac

MODE=paper
if [[ "${1:-}" == "--quick" ]]; then MODE=quick; shift; fi
if [[ "${1:-}" == "--reduced" ]]; then MODE=reduced; shift; fi
OUT_ROOT="${1:-runs/gaussian_mixture}"
if [[ $# -gt 0 ]]; then shift; fi
PY="${PYTHON:-python}"
SCRIPT="$(dirname "$0")/gaussian_mixture.py"

SIGMA2=()  # empty: the script's default grid
case $MODE in
  quick)
    COMMON=(--d-input 64 --d-hidden 64 --seeds 3)
    DVALS=(16 32 64 128) ;;
  reduced)
    COMMON=(--samples-per-cluster 100 --d-input 256 --d-hidden 256 --seeds 3)
    DVALS=(64 128 256 512)
    SIGMA2=(--sigma2 0 0.5 1 2 4 16 64) ;;
  *)
    COMMON=()
    DVALS=(128 256 512 1024) ;;
esac

run() {  # run NAME ARGS...
  local name="$1"; shift
  echo "== ${name}" >&2
  "$PY" "$SCRIPT" "${COMMON[@]}" "$@" --out "${OUT_ROOT}/${name}"
}

run fig18_d_input      --vary d_input      --values "${DVALS[@]}" "${SIGMA2[@]}" "$@"
run fig19_d_hidden     --vary d_hidden     --values "${DVALS[@]}" "${SIGMA2[@]}" "$@"
run fig20_weight_decay --vary weight_decay --values 0 1e-4 1e-3 1e-2 "${SIGMA2[@]}" "$@"
run fig21_tau2         --vary tau2         --sigma2 4 "$@"
