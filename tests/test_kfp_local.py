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
from concurrent.futures import ThreadPoolExecutor
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
DATA = ROOT / "tests" / "data" / "compile"
# Every example, plus the compiler's notebooks that add something (aliases and RNG state
# crossing artifacts; Kale's unseeded example). kale_linear adds nothing the examples do not
# cover at run time (its limits/retries are IR-only; see test_compile_golden).
PARITY = [
    *sorted((ROOT / "examples" / "notebooks").glob("*.ipynb")),
    DATA / "seeded_alias.ipynb",
    DATA / "kale_parameters_metrics.ipynb",
]
WITH_HTML = {DATA / "seeded_alias.ipynb"}

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
    """Value equality for what notebooks pass around (arrays, frames, estimators, dicts)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    mod = type(a).__module__.split(".")[0]
    if mod == "numpy":
        import numpy as np

        return bool(np.array_equal(a, b))
    if mod == "pandas":
        return bool(a.equals(b))
    if hasattr(a, "get_params"):  # a scikit-learn estimator: same params and fitted state
        fitted = [k for k in vars(a) if k.endswith("_") and not k.startswith("_")]
        return repr(a.get_params()) == repr(b.get_params()) and all(
            _equal(getattr(a, k), getattr(b, k)) for k in fitted
        )
    try:
        return bool(a == b)
    except Exception:
        return repr(a) == repr(b)


def _local_snapshot(pipeline, path, store) -> dict:
    """What a LocalRunner run produced: value dirs, metrics, executed notebooks' text outputs."""
    # The GPU limits of the Kale example are for KFP; here the comparison runs on the CPU.
    run = LocalRunner(store, cache=False, allow_cpu=True).run(pipeline, path)
    assert run.state is RunState.succeeded, [(s.step, s.error) for s in run.steps]
    metrics = store.get_metrics(run.id)
    snap: dict = {}
    for s in run.steps:
        for var, location in s.outputs.items():
            snap[("value", s.step, var)] = location
        if s.step in metrics:
            snap[("metrics", s.step)] = {
                # KFP metrics are floats; other values travel as metadata unchanged.
                k: float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for k, v in metrics[s.step].items()
            }
        for cell, texts in _text_outputs(s.executed_notebook).items():
            snap[("text", s.step, cell)] = texts
    return snap


def _kfp_snapshot(pipeline, tasks, plans) -> dict:
    snap: dict = {}
    for step in pipeline.steps:
        plan, task_dir = plans[step.name], tasks[step.name]
        executor_output = json.loads((task_dir / "executor_output.json").read_text())
        for var, arg in plan.outputs.items():
            snap[("value", step.name, var)] = str(task_dir / arg / value_dirname(var))
            # The artifact's metadata carries the saved value's digest for the UI.
            art_meta = executor_output["artifacts"][arg]["artifacts"][0]["metadata"]
            assert art_meta["digest"] == describe(snap[("value", step.name, var)])["digest"]
        if step.role == "metrics":
            meta = executor_output["artifacts"][plan.metrics]["artifacts"][0]["metadata"]
            snap[("metrics", step.name)] = meta
        for cell, texts in _text_outputs(task_dir / plan.executed_notebook).items():
            snap[("text", step.name, cell)] = texts
    return snap


def _same(key, a, b) -> bool:
    if key[0] != "value":
        return a == b
    return describe(a)["digest"] == describe(b)["digest"] or _equal(load_value(a), load_value(b))


@pytest.mark.parametrize("path", PARITY, ids=lambda p: p.stem)
def test_compiled_pipeline_under_kfp_local_matches_local_runner(path, tmp_path):
    pipeline = analyze_notebook(path)
    store = RunStore(tmp_path / "store.db")
    # The local runner works in a thread while kfp.local runs its tasks one by one.
    with ThreadPoolExecutor(1) as pool:
        local_future = pool.submit(_local_snapshot, pipeline, path, store)
        tasks, plans, error = _kfp_local(pipeline, path, tmp_path / "kfp", html=path in WITH_HTML)
        local = local_future.result()
    assert error is None, error
    kfp = _kfp_snapshot(pipeline, tasks, plans)
    assert kfp.keys() == local.keys()
    expected_values = sum(len(s.outputs) + len(s.state_outputs) for s in pipeline.steps)
    assert sum(1 for k in kfp if k[0] == "value") == expected_values
    assert any(k[0] == "metrics" and kfp[k] for k in kfp) == any(
        s.role == "metrics" for s in pipeline.steps
    )
    differ = {k for k in kfp if not _same(k, kfp[k], local[k])}
    if differ:
        # As in the fidelity measure: what differs between two straight local runs
        # (unseeded randomness, timings) is not compared.
        again = _local_snapshot(pipeline, path, RunStore(tmp_path / "again.db"))
        unstable = {k for k in local if not _same(k, local[k], again[k])}
        assert differ <= unstable, sorted(differ - unstable)
        assert len(unstable) < len(local)  # something was still compared
    for step in pipeline.steps:
        if path in WITH_HTML:
            html = (tasks[step.name] / plans[step.name].html).read_text(encoding="utf-8")
            assert "<html" in html[:2000].lower()


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


def test_steps_named_after_builtins_run_under_kfp_local(tmp_path):
    from jupyter_pipeline.compile.builder import task_names

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        new_code_cell("x = [1, 2]", metadata={"tags": ["step:list"]}),
        new_code_cell("t = str(len(x))", metadata={"tags": ["step:type"]}),
        new_code_cell("print('t is', t)", metadata={"tags": ["step:print"]}),
    ]
    path = tmp_path / "builtins.ipynb"
    nbformat.write(nb, path)
    pipeline = analyze_notebook(path)
    assert [s.name for s in pipeline.steps] == ["list", "type", "print"]
    tasks, plans, error = _kfp_local(pipeline, path, tmp_path / "kfp", html=False)
    assert error is None
    # Each task's folder is named as task_names() says (what the KFP runner maps back with).
    expected = task_names(pipeline)
    assert {s: t.name for s, t in tasks.items()} == expected == {s: s for s in expected}
    executed = tasks["print"] / plans["print"].executed_notebook
    assert _text_outputs(executed)[2] == ["t is 2\n"]
