#!/usr/bin/env bash
# Install (first time), then run the quickstart recipe end to end against the built-in simulated server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/synthgen run recipes/quickstart.yaml --backend sim "$@"
