#!/usr/bin/env bash
# Re-runs the published results: every registered study at one budget, one at a time, each in
# its own results folder (so no study reuses another's autoencoders and each wall time is the
# study's own), then writes each study's report with analysis.compare. Those files are
# generated: never edit them by hand.
#
#   ./scripts/reproduce_results.sh                       # laptop (mnist-5k), this machine -> docs/results/
#   ./scripts/reproduce_results.sh ablation_dropout      # some of them
#   RESULTS_ROOT=/tmp/rerun ./scripts/reproduce_results.sh ablation_dropout   # elsewhere
#
#   ./scripts/reproduce_results.sh --budget full         # real MNIST on this machine's GPU -> docs/results/full/
#   ./scripts/reproduce_results.sh --budget full --data-dir /data/mnist      # offline: the IDX files
#   ./scripts/reproduce_results.sh --budget full --address auto --storage s3://BUCKET/studies
#                                                        # a Ray cluster with several GPUs, from its head
#   ./scripts/reproduce_results.sh --budget full --address auto --storage s3://BUCKET/studies \
#       -- --autoscaling --max-concurrent 16             # anything after -- goes to every study.run
#
# laptop: about 2 hours on a 2-core CPU. full: see docs/results/full_estimates.md (every study's
# --dry-run on one GPU and on a 2-core CPU; `scripts/full_estimates.py` regenerates it).
#
# One GPU: the runner sees it and gives every trial a quarter of it (--gpus-per-trial 0.25;
# --gpus-per-trial changes it); MNIST is downloaded once into the cache (~/.cache/ablation-studies)
# unless --data-dir or STUDY_DATA_DIR names the IDX files. A Ray cluster (--address: a head's
# address, or auto on one of its nodes): the runner's driver runs here and the trials where Ray
# puts them, so the data is needed here only, and the Tune state must be on storage every node
# reaches (--storage, or STUDY_STORAGE: s3://..., gs://..., or a folder every node mounts). The
# MLflow store stays here (results-full/<study>/mlflow.db) unless -- --tracking-uri says otherwise.
# A study that stopped part-way continues with the same command plus -- --resume.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
budget=laptop address="" storage=${STUDY_STORAGE:-} data_dir="" gpus="" studies=() extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --budget) budget=${2:?--budget needs a value}; shift 2 ;;
    --address) address=${2:?--address needs a value}; shift 2 ;;
    --storage) storage=${2:?--storage needs a value}; shift 2 ;;
    --data-dir) data_dir=${2:?--data-dir needs a value}; shift 2 ;;
    --gpus-per-trial) gpus=${2:?--gpus-per-trial needs a value}; shift 2 ;;
    -h|--help) usage ;;
    --) shift; extra=("$@"); break ;;
    -*) echo "reproduce_results.sh: unknown option $1 (options after -- go to study.run)" >&2; usage 2 ;;
    *) studies+=("$1"); shift ;;
  esac
done
if [ -n "$address" ] && [ -z "$storage" ]; then
  echo "reproduce_results.sh: --address needs --storage (or STUDY_STORAGE): on a cluster of several nodes the" \
       "Tune state must be where every node can write it (s3://BUCKET/prefix, gs://..., a shared folder);" \
       "on a one-node cluster any folder of its own, e.g. --storage $PWD/results-$budget/tune" >&2
  exit 2
fi

./scripts/setup.sh
root=${RESULTS_ROOT:-results-$budget}
if [ "$budget" = laptop ]; then out=${DOCS_RESULTS:-docs/results}; else out=${DOCS_RESULTS:-docs/results/$budget}; fi
if [ ${#studies[@]} -eq 0 ]; then
  mapfile -t studies < <(.venv/bin/python -m study.run --list | awk 'NF {print $1}')
fi
options=(--budget "$budget")
[ -n "$address" ] && options+=(--address "$address")
[ -n "$storage" ] && options+=(--storage "$storage")
[ -n "$data_dir" ] && options+=(--data-dir "$data_dir")
[ -n "$gpus" ] && options+=(--gpus-per-trial "$gpus")
options+=(${extra[@]+"${extra[@]}"})
tracking=""   # the store analysis.compare reads: the runner's default, or a --tracking-uri given after --
for ((i = 0; i < ${#extra[@]}; i++)); do
  case "${extra[i]}" in
    --tracking-uri) tracking=${extra[i + 1]:-} ;;
    --tracking-uri=*) tracking=${extra[i]#--tracking-uri=} ;;
  esac
done
mkdir -p "$out"
for study in "${studies[@]}"; do
  dir="$root/$study"
  echo "== $study at $budget -> $dir ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
  .venv/bin/python -m study.run "$study" "${options[@]}" --results-dir "$dir"
  rm -rf "${out:?}/$study"
  case "$dir" in /*) store="$dir" ;; *) store="$PWD/$dir" ;; esac      # RESULTS_ROOT may be absolute
  .venv/bin/python -m analysis.compare "$study" --budget "$budget" --tracking-uri "${tracking:-sqlite:///$store/mlflow.db}" \
    --output "$out/$study" --format md,csv
done
