#!/usr/bin/env bash
# Set up, then run the whole test suite (unit tests with a fake encoder, integration tests
# with the real model, the headless-browser test of the HTML report), ruff and mypy.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
.venv/bin/ruff check auditor cli.py tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
