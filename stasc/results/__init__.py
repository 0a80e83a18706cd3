"""Results of finished runs: per-variant tables, bootstrap intervals and comparisons with the base
model, as in docs/results.md (written by experiments/report.py)."""
