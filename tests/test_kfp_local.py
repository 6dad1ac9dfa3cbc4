"""Parity: the compiled KFP pipeline, run under ``kfp.local``, computes what the local runner does.

Each notebook is compiled with kfp's compiler (the same components a cluster runs) and run
with ``kfp.local.SubprocessRunner(use_venv=False)``: every task is a real subprocess running
the component's embedded code, which calls the project's step runtime (papermill, a fresh
kernel per step). The same pipeline also runs with :class:`LocalRunner`. The saved output
values (digests and loaded values), the metrics and the text outputs of every user cell in
the executed step notebooks must be equal.

What ``kfp.local`` cannot do, and so is not exercised here (the compiled pipeline still
carries it; ``tests/test_compile*.py`` check it is in the IR): CPU/memory/GPU requests and
limits (kfp.local warns and ignores them), Kubernetes secrets (kfp-kubernetes platform
config), retries, caching across runs, and per-step images (every task uses this
environment). It also runs independent tasks one after another.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.compile import KfpConfig, build_pipeline_func
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.runtime.serializers import describe, load_value, value_dirname
from jupyter_pipeline.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "tests" / "data" / "compile").glob("*.ipynb")
)

pytestmark = pytest.mark.kernel


def _kfp_local(pipeline, path, root: Path, html: bool = True):
    """Run the compiled pipeline under kfp.local; return (task folder per step, plans)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import kfp.local

        func, plans = build_pipeline_func(
            pipeline, path, config=KfpConfig(), workdir=str(Path(path).parent), html=html
        )
        kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        error = None
        try:
            func()
        except RuntimeError as exc:  # kfp.local raises when a task fails
            error = exc
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return {s.name: run_dir / plans[s.name].task for s in pipeline.steps}, plans, error


def _text_outputs(nb_path) -> dict[int, list[str]]:
    """Text outputs of the user's cells (keyed by source cell) in an executed step notebook."""
    nb = nbformat.read(nb_path, as_version=4)
    out: dict[int, list[str]] = {}
    for cell in nb.cells:
        source_cell = cell.get("metadata", {}).get("jupyter_pipeline", {}).get("source_cell")
        if source_cell is None or cell.cell_type != "code":
            continue
        texts = []
        for o in cell.outputs:
            if o.output_type == "stream" and o.name == "stdout":
                texts.append(o.text)
            elif o.output_type in ("execute_result", "display_data"):
                texts.append(o.get("data", {}).get("text/plain", ""))
            elif o.output_type == "error":
                texts.append(f"{o.ename}: {o.evalue}")
        out[source_cell] = texts
    return out


def _equal(a, b) -> bool:
    if type(a) is not type(b):
        return False
    mod = type(a).__module__.split(".")[0]
    if mod == "numpy":
        import numpy as np

        return bool(np.array_equal(a, b))
    if mod == "pandas":
        return bool(a.equals(b))
    if mod == "sklearn":
        return json.dumps(a.get_params(), default=repr) == json.dumps(
            b.get_params(), default=repr
        ) and all(
            _equal(getattr(a, k), getattr(b, k))
            for k in vars(a)
            if k.endswith("_") and not k.startswith("_")
        )
    try:
        return bool(a == b)
    except Exception:
        return repr(a) == repr(b)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_compiled_pipeline_under_kfp_local_matches_local_runner(path, tmp_path):
    pipeline = analyze_notebook(path)
    store = RunStore(tmp_path / "store.db")
    local = LocalRunner(store, cache=False).run(pipeline, path)
    assert local.state is RunState.succeeded, [(s.step, s.error) for s in local.steps]
    local_steps = {s.step: s for s in local.steps}
    local_metrics = store.get_metrics(local.id)

    tasks, plans, error = _kfp_local(pipeline, path, tmp_path / "kfp")
    assert error is None, error

    compared_values = 0
    for step in pipeline.steps:
        plan, task_dir, ref = plans[step.name], tasks[step.name], local_steps[step.name]
        executor_output = json.loads((task_dir / "executor_output.json").read_text())
        for var, arg in plan.outputs.items():
            kfp_dir = task_dir / arg / value_dirname(var)
            meta = describe(str(kfp_dir))
            assert meta["digest"] == ref.digests[var], (step.name, var)
            art_meta = executor_output["artifacts"][arg]["artifacts"][0]["metadata"]
            assert art_meta["digest"] == ref.digests[var]
            local_value = load_value(ref.outputs[var])
            assert _equal(load_value(str(kfp_dir)), local_value), (step.name, var)
            compared_values += 1
        if step.role == "metrics":
            kfp_metrics = executor_output["artifacts"][plan.metrics]["artifacts"][0]["metadata"]
            assert kfp_metrics == {k: float(v) for k, v in local_metrics[step.name].items()}
            assert kfp_metrics  # something was reported
        # The executed step notebook (.ipynb artifact, and its HTML) shows the same output.
        assert _text_outputs(task_dir / plan.executed_notebook) == _text_outputs(
            ref.executed_notebook
        ), step.name
        assert "<html" in (task_dir / plan.html).read_text(encoding="utf-8")[:2000].lower()
    assert compared_values == sum(len(s.outputs) + len(s.state_outputs) for s in pipeline.steps)


def test_failing_step_fails_the_kfp_task_and_keeps_its_executed_notebook(tmp_path):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        new_code_cell("x = 1", metadata={"tags": ["step:ok"]}),
        new_code_cell("print('before')\ny = x / 0", metadata={"tags": ["step:boom"]}),
        new_code_cell("print(y)", metadata={"tags": ["step:after"]}),
    ]
    path = tmp_path / "fails.ipynb"
    nbformat.write(nb, path)
    pipeline = analyze_notebook(path)
    tasks, plans, error = _kfp_local(pipeline, path, tmp_path / "kfp", html=False)
    assert error is not None and "boom" in str(error)
    executed = tasks["boom"] / plans["boom"].executed_notebook
    outputs = _text_outputs(executed)
    assert outputs[1] == ["before\n", "ZeroDivisionError: division by zero"]
    assert not tasks["after"].exists()  # nothing after the failure ran
