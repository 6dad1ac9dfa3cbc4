"""Every example notebook, run as a pipeline, matches a straight papermill run cell by cell."""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
import papermill
import pytest

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.runners.verify import compare_notebooks
from jupyter_pipeline.store import RunStore

EXAMPLES = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.kernel


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("notebook", EXAMPLES, ids=lambda p: p.stem)
def test_example_pipeline_equals_straight_run(notebook: Path, tmp_path):
    before = hashlib.sha256(notebook.read_bytes()).hexdigest()
    straight = tmp_path / "straight.ipynb"
    papermill.execute_notebook(
        str(notebook), str(straight), cwd=str(notebook.parent), progress_bar=False
    )
    pipeline = analyze_notebook(notebook)
    assert not pipeline.errors
    merged = tmp_path / "merged.ipynb"
    run = LocalRunner(RunStore(tmp_path / "runs.sqlite"), cache=False).run(
        pipeline, notebook, output=merged
    )
    assert run.state is RunState.succeeded, [(s.step, s.error) for s in run.steps]
    diffs = compare_notebooks(
        nbformat.read(str(straight), as_version=4), nbformat.read(str(merged), as_version=4)
    )
    assert not diffs, "\n".join(f"cell {d.cell}:\n{d.diff()}" for d in diffs)
    assert hashlib.sha256(notebook.read_bytes()).hexdigest() == before
