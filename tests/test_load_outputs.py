"""load_outputs / describe_outputs on real local runs (real kernels, real serializers)."""

from __future__ import annotations

import nbformat
import numpy as np
import pandas as pd
import pytest
from helpers import code_cell, write_nb
from nbclient import NotebookClient

import jupyter_pipeline
from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import RunState
from jupyter_pipeline.outputs import OutputsError, describe_outputs, load_outputs
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.store import RunStore

pytestmark = pytest.mark.kernel

CELLS = [
    code_cell("import numpy as np\nimport pandas as pd", "imports"),
    code_cell(
        "df = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})\n"
        "arr = np.arange(10.0)\n"
        "same = arr\n"  # a second name for one object
        "box = {'arr': arr}\n"  # shares arr: saved as a group
        "n = 41",
        "step:prepare",
    ),
    code_cell("total = float(arr.sum()) + n + len(df) + len(box) + len(same)", "step:train"),
    code_cell("raise ValueError('boom')\nlater = 1", "step:broken"),
    code_cell("print(total, later)", "step:report"),
]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One real run: prepare and train succeed, broken fails, report is skipped."""
    tmp = tmp_path_factory.mktemp("load")
    store = RunStore(tmp / "store" / "runs.sqlite")
    nb_path = write_nb(tmp / "nb.ipynb", CELLS)
    run = LocalRunner(store).run(analyze_notebook(nb_path), nb_path)
    states = {s.step: s.state for s in run.steps}
    assert states == {
        "prepare": RunState.succeeded,
        "train": RunState.succeeded,
        "broken": RunState.failed,
        "report": RunState.skipped,
    }, run
    yield store, run, nb_path
    store.close()


def test_loads_values_with_their_types_and_sharing(finished_run):
    store, run, _ = finished_run
    values = load_outputs(run.id, "prepare", store=store, into=False)
    assert set(values) == {"df", "arr", "same", "box", "n"}
    pd.testing.assert_frame_equal(values["df"], pd.DataFrame({"a": [1, 2, 3], "b": list("xyz")}))
    np.testing.assert_array_equal(values["arr"], np.arange(10.0))
    assert values["same"] is values["arr"]  # one object under two names, as in the notebook
    assert values["box"]["arr"] is values["arr"]  # shared inner object stays shared
    assert values["n"] == 41
    assert "df: DataFrame" in repr(values) and run.id in repr(values)


def test_prefix_names_and_namespace(finished_run):
    store, run, _ = finished_run
    ns: dict = {}
    values = load_outputs(run.id[:5], "prepare", ["n", "df"], store=store, into=ns)
    assert list(values) == ["n", "df"] and values.run_id == run.id
    assert ns["n"] == 41 and isinstance(ns["df"], pd.DataFrame)
    # Outside IPython, the default loads into no namespace.
    assert load_outputs(run.id, "train", store=store)["total"] == 45.0 + 41 + 3 + 1 + 10


def test_describe_reports_type_and_size_without_loading(finished_run):
    store, run, _ = finished_run
    meta = describe_outputs(run.id, "prepare", store=store)
    assert meta["df"]["type"] == "pandas.DataFrame"
    assert meta["arr"]["type"] == "numpy.ndarray" and meta["arr"]["size"] >= 80
    assert meta["same"]["type"] == "numpy.ndarray"  # an alias reports its target's type
    assert all(m["size"] > 0 for m in meta.values())


@pytest.mark.parametrize(
    ("run_id", "step", "names", "message"),
    [
        ("zzzzzzzz", "prepare", None, "no run 'zzzzzzzz'"),
        (None, "nope", None, "has no step 'nope'; its steps: prepare, train, broken, report"),
        (
            None,
            "broken",
            None,
            "is failed (step broken failed in cell 3: ValueError: boom); only a succeeded",
        ),
        (None, "report", None, "is skipped"),
        (None, "prepare", ["missing"], "saved no 'missing'; it saved: arr, box, df, n, same"),
    ],
)
def test_clear_errors(finished_run, run_id, step, names, message):
    store, run, _ = finished_run
    with pytest.raises(OutputsError) as err:
        load_outputs(run_id or run.id, step, names, store=store)
    assert message in str(err.value)


def test_cached_step_loads_from_the_cache(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    nb_path = write_nb(
        tmp_path / "c.ipynb",
        [code_cell("xs = [1, 2, 3]", "step:a"), code_cell("print(sum(xs))", "step:b")],
    )
    runner = LocalRunner(store)
    runner.run(analyze_notebook(nb_path), nb_path)
    again = runner.run(analyze_notebook(nb_path), nb_path)
    assert again.steps[0].state is RunState.cached, again
    assert load_outputs(again.id, "a", store=store, into=False) == {"xs": [1, 2, 3]}


def test_pruned_values_say_so(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    nb_path = write_nb(
        tmp_path / "p.ipynb", [code_cell("v = 7", "step:a"), code_cell("print(v)", "step:b")]
    )
    run = LocalRunner(store, cache=False).run(analyze_notebook(nb_path), nb_path)
    path = run.steps[0].outputs["v"]
    import shutil

    shutil.rmtree(path)
    with pytest.raises(OutputsError, match=r"is gone from .*pruned"):
        load_outputs(run.id, "a", store=store)


def test_load_into_a_real_kernel(finished_run, monkeypatch):
    """The cell "load into kernel" inserts defines the step's values as kernel variables."""
    store, run, _ = finished_run
    monkeypatch.setenv("JUPYTER_PIPELINE_STORE", str(store.path))
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f'import jupyter_pipeline\njupyter_pipeline.load_outputs("{run.id}", "prepare")'
        ),
        nbformat.v4.new_code_cell("print(type(df).__name__, n + 1, same is arr)"),
    ]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    shown = nb.cells[0].outputs[0]["data"]["text/plain"]
    assert shown.startswith(f"<loaded from run {run.id}, step prepare: arr: ndarray")
    assert nb.cells[1].outputs[0]["text"] == "DataFrame 42 True\n"


def test_exported_lazily():
    assert jupyter_pipeline.load_outputs is load_outputs
    with pytest.raises(AttributeError):
        jupyter_pipeline.no_such_thing  # noqa: B018
