#!/usr/bin/env bash
# The test command: set up (idempotent) and run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FRIEREN_REFERENCE_DIR=${FRIEREN_REFERENCE_DIR:-$(cd .. && pwd)/shared/reference}
exec .venv/bin/python -m pytest -q "$@"
