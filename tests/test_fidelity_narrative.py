"""The fidelity measure on narrative-tutorial patterns, notebooks built in-test.

Each notebook is split one step per code cell and compared with straight papermill runs by
``bench/fidelity.py`` (as ``tests/test_fidelity.py`` does on corpus notebooks): names looked up
by ``eval`` inside notebook helpers, and values of library classes that are not arrays or
frames (``np.recarray``'s class lives in ``numpy.rec``, a submodule numpy imports on demand).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import code_cell, write_nb

ROOT = Path(__file__).resolve().parent.parent


def _fidelity():  # type: ignore[no-untyped-def]
    if "bench_fidelity" in sys.modules:  # tests/test_fidelity.py loaded it already
        return sys.modules["bench_fidelity"]
    spec = importlib.util.spec_from_file_location("bench_fidelity", ROOT / "bench" / "fidelity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fidelity = _fidelity()
pytestmark = pytest.mark.kernel

EVAL_HELPERS = [
    # A tutorial's display helper: evaluates the names it is given when it is shown.
    "class display:\n"
    "    def __init__(self, *names):\n"
    "        self.names = names\n"
    "    def __repr__(self):\n"
    "        return '\\n'.join(f'{n}: {eval(n)!r}' for n in self.names)",
    "def show(name):\n    return eval(name)",
    "x = 42\ny = [1, 2]",
    "display('x', 'y')",
    "show('x + len(y)')",
    "d = display('x')",
    "x = 43",
    "d",
]

LIBRARY_VALUES = [
    "import numpy as np",
    "data = np.zeros(2, dtype=[('age', 'i4'), ('w', 'f8')])",
    "rec = data.view(np.recarray)",
    "rec['age'] + 1",
    "rec.w.sum(), type(rec).__name__",
    "masked = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])\nkind = np.dtype([('a', 'i4')])",
    "masked.sum(), kind.names",
    "import pandas as pd\nperiod = pd.Period('2024-01', freq='M')",
    "period + 1, type(period).__name__",
]


def _measure(cells: list[str], tmp_path: Path):  # type: ignore[no-untyped-def]
    (tmp_path / "nb").mkdir()
    nb_path = write_nb(tmp_path / "nb" / "narrative.ipynb", [code_cell(c) for c in cells])
    before = nb_path.read_bytes()
    r = fidelity.measure(nb_path, runs=2, work=tmp_path / "work", max_parallel=2)
    assert nb_path.read_bytes() == before  # the user's notebook is never written
    return r


def test_names_evaluated_by_notebook_helpers_reach_their_steps(tmp_path: Path) -> None:
    r = _measure(EVAL_HELPERS, tmp_path)
    assert r.straight_error is None
    assert r.run_error is None, r.run_error
    assert r.run_state == "succeeded"
    merged = nbformat.read(str(Path(r.work_dir) / "pipeline.ipynb"), as_version=4)
    shown = merged.cells[7].outputs[0]["data"]["text/plain"]
    assert shown == "x: 43"  # the x of the step before, as in the notebook
    assert r.compared == len(EVAL_HELPERS)
    assert [(c.cell, c.diff) for c in r.differing] == []
    assert r.reproduced


def test_library_values_that_are_not_arrays_or_frames_keep_their_class(tmp_path: Path) -> None:
    r = _measure(LIBRARY_VALUES, tmp_path)
    assert r.straight_error is None
    assert r.run_error is None, r.run_error
    assert r.run_state == "succeeded"
    assert r.compared == len(LIBRARY_VALUES)
    assert [(c.cell, c.diff) for c in r.differing] == []
    assert r.reproduced
