"""Pre-imports added to warming kernels (no kernels needed)."""

from __future__ import annotations

from nbformat.v4 import new_code_cell

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.runners.prewarm import add_preimports, fork_preimports, preimport_modules
from jupyter_pipeline.runtime import build_step_notebook


def test_top_level_imports_are_found():
    sources = [
        "import numpy as np, os.path\nfrom sklearn.linear_model import Lasso\n"
        "def f():\n    import secret_inner\n",
        "%time x = 1\nfrom . import sibling\nfrom pandas import *\nimport numpy",
    ]
    assert preimport_modules(sources) == [
        "numpy",
        "os.path",
        "sklearn.linear_model",
        "sklearn.linear_model.Lasso",
        "pandas",
    ]


def test_import_state_changes_switch_it_off():
    assert preimport_modules(["import sys\nsys.path.insert(0, 'lib')\nimport mylib"]) == []
    assert preimport_modules(["import matplotlib\nmatplotlib.use('Agg')\nimport pylab"]) == []
    assert preimport_modules(["import os\nos.environ['X'] = '1'\nimport lib"]) == []


def test_fork_preimports_takes_top_level_imports_unless_resolution_may_change():
    sources = [
        "import numpy as np\nfrom sklearn.linear_model import Lasso\nfrom . import sibling",
        "%matplotlib inline\nimport matplotlib.pyplot as plt\ndef f():\n    import scipy",
    ]
    assert fork_preimports(sources) == [
        "numpy",
        "sklearn.linear_model",
        "sklearn.linear_model.Lasso",
        "matplotlib.pyplot",
    ]
    # Anything that may change where (or what) an import resolves: nothing is pre-imported.
    for change in (
        "import sys\nsys.path.insert(0, 'vendor')",
        "import os\nos.environ['OMP_NUM_THREADS'] = '1'",
        "%pip install seaborn==0.13",
        "!pip install seaborn",
        "%load_ext autoreload",
        "import importlib\nimportlib.reload(np)",
    ):
        assert fork_preimports([*sources, change]) == [], change


def test_definitions_cell_gets_guarded_imports():
    nb = new_notebook_with(
        new_code_cell("x = 1", metadata={"tags": ["step:a"]}),
        new_code_cell(
            "import json\nfrom no_such_module_here import thing\ny = json.dumps(x)",
            metadata={"tags": ["step:b"]},
        ),
    )
    pipeline = analyze(nb, path="t.ipynb")
    step_nb = dict(build_step_notebook(nb, pipeline, "b"))
    out = add_preimports(step_nb)
    defs = next(c for c in out["cells"] if "jupyter-pipeline-definitions" in c["metadata"]["tags"])
    assert "'json'" in defs["source"] and "'no_such_module_here'" in defs["source"]
    assert defs["source"].rstrip().endswith("pass")
    namespace: dict = {}
    exec(defs["source"], namespace)  # a missing module is left for the cell to fail on
    assert "__jp_module" not in namespace
    # Step a imports nothing: its notebook is returned as is.
    a_nb = dict(build_step_notebook(nb, pipeline, "a"))
    assert add_preimports(a_nb) is a_nb


def new_notebook_with(*cells):
    from nbformat.v4 import new_notebook

    return new_notebook(
        cells=list(cells), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )
