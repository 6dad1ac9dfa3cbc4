"""The step cache keys on what decides a step's result: data files read, not pre-imports."""

from __future__ import annotations

import os

import pytest
from helpers import code_cell as _cell
from helpers import write_nb

from jupyter_pipeline.analysis import analyze, analyze_notebook
from jupyter_pipeline.model import RunState
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.cache import files_read, step_code
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.runners.prewarm import add_preimports
from jupyter_pipeline.runtime.notebook import build_step_notebook
from jupyter_pipeline.store import RunStore

CELLS = [
    _cell("import pandas as pd\nimport numpy as np", "imports"),
    _cell(
        "import csv\ndf = pd.read_csv('data/in.csv')\nprint(len(df), csv.QUOTE_ALL)", "step:load"
    ),
    _cell("k = 3\nprint(k)", "step:other"),
    _cell("total = int(df.a.sum()) + k\nprint('total', total)", "step:report"),
]


def _step_nbs(path):
    nb = read_notebook(path)
    pipeline = analyze(nb, str(path))
    return {s.name: build_step_notebook(nb, pipeline, s.name) for s in pipeline.steps}


def test_files_read_finds_literal_paths_the_analysis_knows(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("a\n1\n")
    (tmp_path / "arr.npy").write_bytes(b"x")
    absolute = tmp_path / "abs.txt"
    absolute.write_text("hello")
    path = write_nb(
        tmp_path / "nb.ipynb",
        [
            _cell("import numpy as np\nimport json", "imports"),
            _cell(
                "arr = np.load('arr.npy')\n"
                f"text = open({str(absolute)!r}).read()\n"
                "missing = open('nope.txt') if False else None\n"
                "with open('mine.json', 'w') as f:\n    json.dump([1], f)\n"
                "mine = json.load(open('mine.json'))",
                "step:one",
            ),
            _cell(
                "import pandas as pd\ndf = pd.read_csv(filepath_or_buffer='data/in.csv')",
                "step:two",
            ),
        ],
    )
    (tmp_path / "mine.json").write_text("[0]")  # exists, but step one writes it first
    nbs = _step_nbs(path)
    one = files_read(nbs["one"], tmp_path)
    assert set(one) == {"arr.npy", str(absolute)}
    two = files_read(nbs["two"], tmp_path)
    assert set(two) == {"data/in.csv"}
    (tmp_path / "data" / "in.csv").write_text("a\n2\n")
    assert files_read(nbs["two"], tmp_path) != two
    os.utime(absolute, ns=(1, 1))  # a new mtime with the same content is the same file
    assert files_read(nbs["one"], tmp_path) == one


def test_pre_imports_are_not_part_of_the_step_code(tmp_path):
    path = write_nb(tmp_path / "nb.ipynb", CELLS)
    step_nb = dict(_step_nbs(path)["load"])
    warmed = add_preimports(step_nb)
    assert warmed != step_nb  # pre-warming did change the notebook it executes
    assert step_code(warmed) == step_code(step_nb)


@pytest.mark.kernel
def test_changed_data_file_reruns_its_step_and_prewarm_shares_the_cache(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    (tmp_path / "data").mkdir()
    csv = tmp_path / "data" / "in.csv"
    csv.write_text("a\n1\n2\n")
    path = write_nb(tmp_path / "nb.ipynb", CELLS)

    def states(**kw):
        run = LocalRunner(store, max_parallel=2, **kw).run(analyze_notebook(path), path)
        assert run.state is RunState.succeeded, run
        return {s.step: s.state for s in run.steps}

    ok, cached = RunState.succeeded, RunState.cached
    assert states(prewarm=False) == {"load": ok, "other": ok, "report": ok}
    # Pre-warming (which adds pre-imports to the step notebooks) hits the same entries.
    assert states(prewarm=True) == {"load": cached, "other": cached, "report": cached}
    csv.write_text("a\n1\n5\n")
    assert states() == {"load": ok, "other": cached, "report": ok}
    assert states(prewarm=False) == {"load": cached, "other": cached, "report": cached}
    # Nor does spawning kernels instead of forking them change a key.
    assert states(fork=False) == {"load": cached, "other": cached, "report": cached}
