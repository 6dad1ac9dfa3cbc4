"""Detached launches (runners/launch.py) and run plans (runners/plan.py): the core pieces the
server's ``POST runs`` and ``POST analyze`` stand on, with real runner processes and kernels."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from helpers import nb

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.cli import main
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.launch import LaunchError, launch
from jupyter_pipeline.runners.plan import plan_run
from jupyter_pipeline.store import RunStore


def _notebook(second: str = "b = a + int(open('data.txt').read())\nprint('b is', b)"):
    return nb(
        ("n = 1", ["pipeline-parameters"]),
        ("a = n * 10", ["step:first"]),
        (second, ["step:second"]),
        ("print(b * 2)", ["step:third"]),
    )


def _wait(store: RunStore, run_id: str, timeout: float = 120) -> RunState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = store.get_run(run_id)
        if run.state.finished:
            return run.state
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {store.get_run(run_id)}")


def _plan(store: RunStore, path: Path, **kw) -> dict[str, tuple[str, str]]:
    book = nbformat.read(str(path), as_version=4)
    items = plan_run(analyze(book, path=str(path)), book, path, store, **kw)
    return {i.step: (i.action, i.reason) for i in items}


@pytest.mark.kernel
def test_launch_returns_at_once_and_runs_detached_from_a_copy(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(), str(path))
    before = path.read_bytes()
    (tmp_path / "data.txt").write_text("5")
    # Run the in-memory (unsaved) content: the second step differs from the file's.
    edited = _notebook("b = a + 100\nprint('b is', b)")
    start = time.monotonic()
    run = launch(store, path, notebook=json.loads(nbformat.writes(edited)))
    assert time.monotonic() - start < 10  # the id comes back before any kernel starts
    assert run.state is RunState.queued
    assert run.pid and os.getsid(run.pid) == run.pid  # its own session: outlives the caller
    assert [r.id for r in store.list_runs()] == [run.id]
    assert _wait(store, run.id) is RunState.succeeded
    run_dir = Path(store.get_run(run.id).run_dir)
    copy = nbformat.read(str(run_dir / "notebook.ipynb"), as_version=4)
    assert copy.cells[2].source.startswith("b = a + 100")
    merged = nbformat.read(str(run_dir / "merged.ipynb"), as_version=4)
    assert "b is 110" in json.dumps(merged.cells[2].outputs)
    assert "second: succeeded" in (run_dir / "runner.log").read_text()
    assert path.read_bytes() == before  # the user's file is untouched


def test_launch_refuses_error_diagnostics_and_bad_parameters(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb(("x = 1", ["step:a"]), ("print(y_typo)", ["step:b"])), str(path))
    with pytest.raises(LaunchError) as err:
        launch(store, path)
    assert "cell 1" in err.value.message
    codes = [d["code"] for d in err.value.details["diagnostics"]]
    assert "undefined-name" in codes
    nbformat.write(_notebook(), str(path))
    with pytest.raises(LaunchError, match="unknown parameter 'nope'"):
        launch(store, path, parameters={"nope": 1})
    with pytest.raises(LaunchError, match="parameter n is int"):
        launch(store, path, parameters={"n": "ten"})
    assert store.list_runs() == []  # nothing recorded for a refused run


@pytest.mark.kernel
def test_plan_says_cached_or_will_run_and_why(tmp_path, capsys):
    store_path = tmp_path / "store" / "runs.sqlite"
    store = RunStore(store_path)
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(), str(path))
    (tmp_path / "data.txt").write_text("5")
    assert _plan(store, path) == {
        "first": ("will run", "never run"),
        "second": ("will run", "upstream step first will run"),
        "third": ("will run", "upstream step second will run"),
    }
    run = launch(store, path)
    assert _wait(store, run.id) is RunState.succeeded
    plan = _plan(store, path)
    assert plan == {s: ("cached", f"unchanged since run {run.id}") for s in plan}
    assert _plan(store, path, cache=False)["first"] == ("will run", "cache off")
    # A data file the second step reads changed: it runs, the first stays cached.
    (tmp_path / "data.txt").write_text("6")
    plan = _plan(store, path)
    assert plan["first"][0] == "cached"
    assert plan["second"] == ("will run", "data file data.txt changed")
    (tmp_path / "data.txt").write_text("5")
    assert _plan(store, path, parameters={"n": 2})["first"] == ("will run", "parameter n changed")
    # An edited step: code changed; its dependents wait for it.
    nbformat.write(_notebook("b = a - int(open('data.txt').read())\nprint(b)"), str(path))
    plan = _plan(store, path)
    assert plan["second"] == ("will run", "code changed")
    assert plan["third"] == ("will run", "upstream step second will run")
    # The CLI prints the same plan and runs nothing.
    assert main(["run", "--dry-run", str(path), "--store", str(store_path), "--json"]) == 0
    printed = {i["step"]: (i["action"], i["reason"]) for i in json.loads(capsys.readouterr().out)}
    assert printed == plan
    assert len(store.list_runs()) == 1
