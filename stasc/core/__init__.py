"""The STaSC algorithm itself: prompts, rewards, the correction filter and the metrics.

Pure functions and types over strings and numbers: no models, no files, no network.
"""
