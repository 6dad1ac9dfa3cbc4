"""Name and scope analysis: notebook → Pipeline (steps, inputs/outputs, edges, diagnostics)."""

from __future__ import annotations

from pathlib import Path

from nbformat import NotebookNode

from jupyter_pipeline.model import Pipeline
from jupyter_pipeline.notebook import SplitMode, parse_notebook, read_notebook

__all__ = ["analyze", "analyze_notebook"]


def analyze_notebook(path: str | Path, split: SplitMode = "tags") -> Pipeline:
    """Read the notebook at ``path`` and analyze it (see :func:`analyze`).

    Raises:
        NotebookError: The file or its tags are bad input.
    """
    return analyze(read_notebook(path), path=str(path), split=split)


def analyze(nb: NotebookNode, path: str = "<notebook>", split: SplitMode = "tags") -> Pipeline:
    """Analyze a notebook into a :class:`~jupyter_pipeline.model.Pipeline`.

    Raises:
        NotebookError: Its tags are bad input, or a cell has a real syntax error.
    """
    from jupyter_pipeline.analysis.pipeline import build_pipeline

    return build_pipeline(parse_notebook(nb, path, split))
