#!/usr/bin/env bash
# Draws SVG plots of fanout and spike results with plot.py, whose header lists the plots.
# matplotlib, the standard well-maintained plotting library for Python, is installed from PyPI
# into a virtual environment the first time (under /tmp by default, outside the repository).
#
# Usage: bench/scripts/plot.sh [--out DIR] [--venv DIR] RESULT_FOLDER...
#   --out DIR    folder for the SVG files [default: bench/results/plots]
#   --venv DIR   virtual environment to create or reuse [default: /tmp/chorus-bench-plot-venv]
# Example:
#   bench/scripts/plot.sh bench/results/compare-2026-12-04-plots bench/results/scenarios-2026-12-04-plots

set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
. "$repo/bench/scripts/lib.sh"

out="$repo/bench/results/plots"
venv=/tmp/chorus-bench-plot-venv
folders=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --venv) venv=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "unknown option $1; see --help" >&2; exit 2 ;;
        *) folders+=("$1"); shift ;;
    esac
done
if [ ${#folders[@]} -eq 0 ]; then
    echo "missing result folders; see --help" >&2
    exit 2
fi

if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "installing matplotlib into $venv"
    python3 -m venv "$venv"
    timeout 600 "$venv/bin/python" -m pip install --quiet 'matplotlib>=3.8,<4'
fi
"$venv/bin/python" "$repo/bench/scripts/plot.py" --out "$out" "${folders[@]}"
