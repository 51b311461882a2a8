#!/usr/bin/env bash
# Create .venv and install auditor with its dev tools.  Idempotent: fast when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip
  # Install PyTorch before anything that depends on it, so pip does not choose a multi-GB
  # CUDA build.  torch==2.13.0 is the CPU build that this project's CPU machines carry;
  # on a machine with an NVIDIA GPU install the torch build you want first instead.
  "$VPY" -m pip install -q "torch==${AUDITOR_TORCH_VERSION:-2.13.0}"
fi
if ! "$VPY" -c "import auditor, sentence_transformers, faiss, polars, datasets, pytest, static_model, ray" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.auditor-installed ]; then
  "$VPY" -m pip install -q -e ".[dev,fast,ray]"
  touch .venv/.auditor-installed
fi
