"""The Gradio app: pick a run (local or on the Hub) and an iteration, ask a question, and see the
initial answer and the self-correction side by side; chat, metrics and the run's data.

    python app.py                      # runs under runs/, or the bundled base model when there are none
    python app.py --hub-repo ORG/RUN   # a run pushed with `python -m stasc push`

Layout in stasc.app.ui, behaviour in stasc.app.handlers, models in stasc.app.engine, the set of
runs in stasc.app.catalog; stasc.cli.app parses the flags and serves it.
"""
