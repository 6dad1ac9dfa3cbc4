"""Pruning the run store: old finished runs, their folders, and cache entries nobody uses."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from helpers import code_cell as _cell
from helpers import run as analyzed
from helpers import write_nb

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.cli import main
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.cache import StepCache
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.store import RunStore

PIPELINE = analyzed(("x = 1", ["step:a"]), ("y = x + 1", ["step:b"]))


def _run(store, state, created, key=None):
    """A run in ``state`` created at ``created``, with a run folder holding a file."""
    pid = os.getpid() if not state.finished else None  # alive: not "runner lost"
    run = store.create_run(PIPELINE, notebook="nb.ipynb", pid=pid)
    folder = store.new_run_dir(run.id)
    (folder / "steps").mkdir()
    (folder / "steps" / "out.npy").write_bytes(b"data")
    store.update_run(run.id, state=state, created=created, run_dir=str(folder))
    if key:
        store.update_step(run.id, "a", cache_key=key)
    return run.id


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "store" / "runs.sqlite") as s:
        yield s


def test_prune_keeps_the_newest_and_never_an_active_run(store):
    now = time.time()
    running = _run(store, RunState.running, now - 50 * 86400)  # the oldest of all
    queued = _run(store, RunState.queued, now - 40 * 86400)
    old = [_run(store, RunState.succeeded, now - d * 86400) for d in (30, 20, 10)]
    failed = _run(store, RunState.failed, now - 5 * 86400)
    newest = _run(store, RunState.cancelled, now - 1)
    folders = {r.id: r.run_dir for r in store.list_runs()}

    result = store.prune(keep=2, dry_run=True)
    assert sorted(result.runs) == sorted(old) and len(store.list_runs()) == 7

    result = store.prune(keep=2)
    assert sorted(result.runs) == sorted(old)
    assert sorted(result.active) == sorted([running, queued])
    left = {r.id for r in store.list_runs()}
    assert left == {running, queued, failed, newest}
    for run_id, folder in folders.items():
        assert os.path.exists(folder) is (run_id in left)
    # Older than 3 days, without a count: the failed run goes, the newest and active stay.
    assert store.prune(older_than=3 * 86400).runs == [failed]
    assert {r.id for r in store.list_runs()} == {running, queued, newest}
    with pytest.raises(ValueError):
        store.prune()


def test_prune_names_cache_keys_only_deleted_runs_used(store):
    now = time.time()
    _run(store, RunState.succeeded, now - 300, key="k-old-only")
    _run(store, RunState.succeeded, now - 200, key="k-shared")
    _run(store, RunState.cached, now - 100, key="k-shared")
    result = store.prune(keep=1)
    assert len(result.runs) == 2
    assert result.cache_keys == ["k-old-only"]  # k-shared is still used by the kept run


def test_prune_keeps_cache_entries_while_a_local_run_is_active(store):
    now = time.time()
    _run(store, RunState.succeeded, now - 300, key="k-old")
    _run(store, RunState.running, now - 10)
    result = store.prune(keep=0)
    assert len(result.runs) == 1 and result.cache_keys == []


def test_cli_prune_usage(tmp_path, capsys):
    db = str(tmp_path / "runs.sqlite")
    assert main(["runs", "--prune", "--store", db]) == 2
    assert "--keep" in capsys.readouterr().err
    assert main(["runs", "--keep", "3", "--store", db]) == 2
    assert "--prune" in capsys.readouterr().err
    assert main(["runs", "--prune", "--keep", "-1", "--store", db]) == 2
    capsys.readouterr()


@pytest.mark.kernel
def test_pruned_cache_entries_rerun_and_kept_ones_still_serve(tmp_path, capsys):
    db = tmp_path / "store" / "runs.sqlite"
    first = [_cell("x = 2\nprint('x', x)", "step:a"), _cell("y = x * 10\nprint('y', y)", "step:b")]
    second = [first[0], _cell("y = x * 100\nprint('y', y)", "step:b")]
    path = tmp_path / "nb.ipynb"

    def run(cells):
        write_nb(path, cells)
        with RunStore(db) as store:
            done = LocalRunner(store, max_parallel=2).run(analyze_notebook(path), path)
        assert done.state is RunState.succeeded, done
        return done

    r1 = run(first)
    r2 = run(second)
    assert [s.state for s in r2.steps] == [RunState.cached, RunState.succeeded]
    with RunStore(db) as store:
        keys = {s.step: store.step_extra(r1.id, s.step)["cache_key"] for s in r1.steps}
    cache = StepCache(db.parent / "cache")
    assert cache.lookup(keys["a"], ["x"]) and cache.lookup(keys["b"], [])

    capsys.readouterr()
    assert main(["runs", "--prune", "--keep", "1", "--store", str(db), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs"] == [r1.id] and report["cache_entries"] == 1
    assert not os.path.exists(r1.run_dir) and os.path.exists(r2.run_dir)
    assert cache.lookup(keys["a"], ["x"]) is not None  # r2 still uses a's entry
    assert cache.lookup(keys["b"], []) is None  # only r1 used b's first version

    r3 = run(first)
    assert [s.state for s in r3.steps] == [RunState.cached, RunState.succeeded]
    with RunStore(db) as store:
        log = Path(store.get_run(r3.id).steps[1].log_path).read_text()
    assert "y 20" in log
