#!/usr/bin/env bash
# Re-runs the published results (docs/results/): every registered study at the `laptop`
# budget on this machine, one at a time, each in its own results folder (so no study reuses
# another's autoencoders and each wall time is the study's own), then writes each study's
# report into docs/results/<study>/ with analysis.compare. Those files are generated: never
# edit them by hand. About 2 hours on a 2-core CPU.
#
#   ./scripts/reproduce_results.sh                      # all studies
#   ./scripts/reproduce_results.sh ablation_dropout     # some of them
#   RESULTS_ROOT=/tmp/rerun ./scripts/reproduce_results.sh ablation_dropout   # elsewhere
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
root=${RESULTS_ROOT:-results-laptop}
out=${DOCS_RESULTS:-docs/results}
if [ $# -gt 0 ]; then studies=("$@"); else
  mapfile -t studies < <(.venv/bin/python -m study.run --list | awk 'NF {print $1}')
fi
for study in "${studies[@]}"; do
  dir="$root/$study"
  echo "== $study at laptop -> $dir ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
  .venv/bin/python -m study.run "$study" --budget laptop --results-dir "$dir"
  rm -rf "${out:?}/$study"
  .venv/bin/python -m analysis.compare "$study" --budget laptop --tracking-uri "sqlite:///$PWD/$dir/mlflow.db" \
    --output "$out/$study" --format md,csv
done
