"""One run directory: the loop that fills it iteration after iteration (resumable step by step),
what it writes where, the run.json manifest, and the atomic file writes that make resuming safe."""
