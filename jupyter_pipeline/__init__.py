"""jupyter-pipeline: turn a tagged notebook into a faithful pipeline."""

__version__ = "0.1.0"
