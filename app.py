"""The STaSC app: ask a question, see the model's answer and its self-correction side by side.

    python app.py                                  # runs under ./runs, else the bundled base model
    python app.py --runs-dir runs --port 7860      # then open http://127.0.0.1:7860
    python app.py --hub-repo my-user/smollm2-stasc # a run pushed with `python -m stasc push`
    STASC_RUNS_DIR=/data/runs STASC_HUB_REPOS=my-user/a,my-user/b python app.py
    python app.py --help                           # every flag

Tabs: Compare (answer vs self-correction, and two iterations), Chat, Metrics, Data.
"""

import sys

from stasc.cli.app import main

if __name__ == "__main__":
    sys.exit(main())
