"""Every command line: `python train.py` (train), `python app.py` (app), `python -m stasc
push|iterations|push-metric` (hub) and `python -m stasc.space deploy|assemble` (space). Each parses its
flags, sets up logging, calls the library and turns a StascError into a one-line message and exit status 2."""
