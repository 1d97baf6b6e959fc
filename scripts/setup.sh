#!/usr/bin/env bash
# Builds .venv (Python 3.11+) with the project and its pinned dependencies. Idempotent: a
# second run with the same pyproject.toml and constraints.txt does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
stamp=.venv/.installed-$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  # Fails the set-up (not a later trial) when torchvision's binary does not load with the torch
  # that was picked, as with the CPU-only torch 2.13.0 wheel.
  .venv/bin/python -c "import torch, torchvision; torchvision.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)"
  rm -f .venv/.installed-*; touch "$stamp"
fi
