"""``analyze`` on every real notebook of the corpus: as tagged, and one step per code cell.

The corpus (``tests/data/corpus``, a copy of ``../shared/corpus``) holds 17 scikit-learn
gallery examples and Kale's 4 example notebooks; each runs straight through without error,
so an error diagnostic on any of them would be one a straight run contradicts.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import Severity

CORPUS = Path(__file__).resolve().parent / "data" / "corpus"
NOTEBOOKS = sorted(CORPUS.glob("*.ipynb"))


def test_the_whole_corpus_is_here() -> None:
    assert len(NOTEBOOKS) == 21
    assert (CORPUS / "data" / "titanic" / "train.csv").is_file()


@pytest.mark.parametrize("split", ["tags", "cells"])
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_corpus_notebook_analyzes_without_errors(path: Path, split: str) -> None:
    before = path.read_bytes()
    p = analyze_notebook(path, split=split)  # type: ignore[arg-type]
    errors = [
        f"cell {d.cell}: {d.code}: {d.message}"
        for d in p.diagnostics
        if d.severity is Severity.error
    ]
    assert errors == []
    assert path.read_bytes() == before  # the notebook is never written

    nb = nbformat.read(path, as_version=4)
    code = {i for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    in_steps = [i for s in p.steps for i in s.cells]
    assert len(in_steps) == len(set(in_steps)), "a cell is in two steps"
    names = [s.name for s in p.steps]
    assert len(names) == len(set(names))
    # Every step's inputs come from an earlier step, and that step outputs them.
    order = {s.name: k for k, s in enumerate(p.steps)}
    for s in p.steps:
        for var, src in s.input_sources.items():
            assert order[src] < order[s.name]
            assert var in p.step(src).outputs
            assert src in s.depends_on
    if split == "cells":
        # One step per code cell; role cells (imports, parameters, skip…) are in no step.
        assert all(len([i for i in s.cells if i in code]) == 1 for s in p.steps)
