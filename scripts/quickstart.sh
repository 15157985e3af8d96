#!/usr/bin/env bash
# Install (first time), then run the quickstart recipe end to end on the packaged SmolLM2-135M-Instruct, embedded
# llama.cpp on the CPU (about two minutes on two cores). Extra arguments go to `synthgen run`, e.g. `--backend sim`
# for the instant simulated server, or `--base-url URL --model M` for a real server.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/synthgen run recipes/quickstart.yaml "$@"
