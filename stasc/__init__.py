"""stasc: Self-Taught Self-Correction (STaSC) for small language models."""

__version__ = "0.1.0"
