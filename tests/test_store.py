"""Run store: round trip, id prefixes, several processes, runner-lost recovery (no kernels)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from jupyter_pipeline.model import Pipeline, RunState, Step
from jupyter_pipeline.store import RUNNER_LOST, RunStore, default_store_path


def _pipeline(*names: str) -> Pipeline:
    return Pipeline(
        name="demo",
        notebook="demo.ipynb",
        steps=[Step(name=n, display_name=n, cells=[i]) for i, n in enumerate(names)],
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_round_trip(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create_run(
        _pipeline("load", "train"),
        notebook=tmp_path / "demo.ipynb",
        parameters={"lr": 0.1, "layers": [1, 2]},
    )
    assert run.state is RunState.queued
    assert [s.step for s in run.steps] == ["load", "train"]
    assert all(s.state is RunState.queued for s in run.steps)
    assert run.notebook == str(tmp_path / "demo.ipynb")

    store.update_run(run.id, state=RunState.running, started=10.0, run_dir=tmp_path)
    store.update_step(
        run.id,
        "load",
        state=RunState.succeeded,
        started=10.0,
        finished=11.5,
        attempts=1,
        outputs={"df": "/x/df"},
        digests={"df": "sha256:abc"},
        metrics={"acc": 0.9},
    )
    store.update_step(run.id, "train", state="failed", error="boom", error_cell=3)

    # A second connection (as another process would have) sees everything.
    other = RunStore(tmp_path / "runs.sqlite")
    got = other.get_run(run.id)
    assert got.state is RunState.running
    assert got.run_dir == str(tmp_path)
    assert got.parameters == {"lr": 0.1, "layers": [1, 2]}
    load, train = got.steps
    assert (load.state, load.started, load.finished, load.attempts) == (
        RunState.succeeded,
        10.0,
        11.5,
        1,
    )
    assert load.outputs == {"df": "/x/df"} and load.digests == {"df": "sha256:abc"}
    assert (train.state, train.error, train.error_cell) == (RunState.failed, "boom", 3)
    assert other.get_metrics(run.id) == {"load": {"acc": 0.9}}
    assert other.get_pipeline(run.id) == _pipeline("load", "train")


def test_ids_prefixes_and_errors(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    runs = [store.create_run(_pipeline("a"), notebook="n.ipynb") for _ in range(3)]
    assert [r.id for r in store.list_runs()] == [r.id for r in reversed(runs)]
    assert len(store.list_runs(limit=2)) == 2
    assert store.get_run(runs[0].id[:6]).id == runs[0].id
    with pytest.raises(KeyError, match="no run"):
        store.get_run("zzzz")
    with pytest.raises(KeyError, match="no run"):
        store.get_run("")
    # 17 hex ids: two share a first character (pigeonhole), so that prefix is ambiguous.
    ids = [r.id for r in runs] + [
        store.create_run(_pipeline("a"), notebook="n.ipynb").id for _ in range(14)
    ]
    first = next(c for c in "0123456789abcdef" if sum(i[0] == c for i in ids) > 1)
    with pytest.raises(KeyError, match="ambiguous"):
        store.get_run(first)
    with pytest.raises(TypeError, match="unknown"):
        store.update_run(runs[0].id, colour="red")
    with pytest.raises(KeyError):
        store.update_step(runs[0].id, "nope", state="running")


def test_if_unfinished_never_brings_a_finished_run_or_step_back(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    run = store.create_run(_pipeline("a", "b"), notebook="n.ipynb")
    assert store.update_run(run.id, if_unfinished=True, state=RunState.running) is True
    assert store.update_step(run.id, "a", if_unfinished=True, state=RunState.running) is True
    store.update_step(run.id, "a", state=RunState.cancelled)
    store.update_run(run.id, state=RunState.cancelled)
    # A late "running" from another process is held back; a finished state still lands.
    assert store.update_run(run.id, if_unfinished=True, state=RunState.running) is False
    assert store.update_step(run.id, "a", if_unfinished=True, state=RunState.running) is False
    assert store.update_step(run.id, "a", state=RunState.succeeded) is True
    got = store.get_run(run.id)
    assert got.state is RunState.cancelled
    assert [s.state for s in got.steps] == [RunState.succeeded, RunState.queued]
    with pytest.raises(KeyError):
        store.update_step(run.id, "nope", if_unfinished=True, state=RunState.running)


def test_default_location(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PIPELINE_STORE", str(tmp_path / "x" / "s.sqlite"))
    assert default_store_path() == tmp_path / "x" / "s.sqlite"
    assert RunStore().path == tmp_path / "x" / "s.sqlite"
    monkeypatch.delenv("JUPYTER_PIPELINE_STORE")
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "pipeline" / "runs.sqlite"


def test_runner_lost_marked_on_open(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    lost = store.create_run(_pipeline("a", "b", "c"), notebook="n.ipynb", pid=_dead_pid())
    store.update_run(lost.id, state=RunState.running)
    store.update_step(lost.id, "a", state=RunState.succeeded, outputs={"x": "/d/x"})
    store.update_step(lost.id, "b", state=RunState.running, started=time.time())
    alive = store.create_run(_pipeline("a"), notebook="n.ipynb", pid=None)
    mine = store.create_run(_pipeline("a"), notebook="n.ipynb", pid=__import__("os").getpid())
    store.update_run(mine.id, state=RunState.running)
    store.close()

    reopened = RunStore(path)
    run = reopened.get_run(lost.id)
    assert (run.state, run.error) == (RunState.failed, RUNNER_LOST)
    assert run.finished is not None
    a, b, c = run.steps
    assert a.state is RunState.succeeded and a.outputs == {"x": "/d/x"}  # nothing else lost
    assert (b.state, b.error) == (RunState.failed, RUNNER_LOST)
    assert c.state is RunState.cancelled
    # A run without a pid, and one whose runner lives, are left alone.
    assert reopened.get_run(alive.id).state is RunState.queued
    assert reopened.get_run(mine.id).state is RunState.running


_WRITER = """
import sys
from jupyter_pipeline.store import RunStore
store = RunStore(sys.argv[1])
run_id, tag = sys.argv[2], sys.argv[3]
for i in range(100):
    store.update_step(run_id, tag, attempts=i + 1)
    store.get_run(run_id)
"""


def test_several_processes_write_at_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    run = store.create_run(_pipeline("a", "b", "c"), notebook="n.ipynb")
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), run.id, name])
        for name in ("a", "b", "c")
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    assert [s.attempts for s in store.get_run(run.id).steps] == [100, 100, 100]


def test_a_sweep_whose_runner_died_reads_as_runner_lost(tmp_path):
    # One definition of "runner lost" for runs and sweeps (the CLI and the UI match on it).
    store = RunStore(tmp_path / "runs.sqlite")
    sweep = store.create_sweep(
        pipeline="demo",
        notebook="n.ipynb",
        axes={"k": [1, 2]},
        trials=[{"k": 1}, {"k": 2}],
        parameters={"k": 1},
        shared_steps=[],
        metric=None,
        maximize=True,
        pid=_dead_pid(),
    )
    lost = store.get_sweep(sweep.id)
    assert (lost.state, lost.error) == (RunState.failed, RUNNER_LOST)
    alive = store.create_sweep(
        pipeline="demo",
        notebook="n.ipynb",
        axes={"k": [1]},
        trials=[{"k": 1}],
        parameters={"k": 1},
        shared_steps=[],
        metric=None,
        maximize=True,
        pid=os.getpid(),
    )
    assert store.get_sweep(alive.id).state is RunState.running
