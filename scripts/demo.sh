#!/usr/bin/env bash
# Set up, then audit the bundled sample: 400 model-generated Alpaca records against the
# 175 human-written Self-Instruct seed tasks they were bootstrapped from, with the real
# all-MiniLM-L6-v2 model.  Writes out/sample/report.{json,md,html} and out/sample/junit.xml.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
.venv/bin/auditor audit sample_data/alpaca_sample.jsonl \
  --reference sample_data/seed_tasks.jsonl \
  --out out/sample --html --junit out/sample/junit.xml
rc=$?
set -e
case $rc in
  0) echo "demo: the gate passed (exit 0)";;
  1) echo "demo: the gate failed (exit 1) - expected here: model-generated Alpaca data is not distributed like the human seed tasks. Read out/sample/report.md";;
  *) echo "demo: auditor exited $rc"; exit "$rc";;
esac
