"""Per-sample difficulty analysis for PyTorch Lightning classifiers."""

__version__ = "0.1.0"
