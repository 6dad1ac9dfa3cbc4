"""The run store's event log: what the server's event stream tails. Every visible change of a
run or step, from any process, is one event with a growing seq, written in the same
transaction as the change; store-only bookkeeping is not an event."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import run as analyzed

from jupyter_pipeline.model import RunState
from jupyter_pipeline.store import RunStore


def _pipeline():
    return analyzed(("x = 1", ["step:a"]), ("y = x", ["step:b"]))


def test_changes_are_events_in_order_and_bookkeeping_is_not(tmp_path):
    store = RunStore(tmp_path / "runs.sqlite")
    assert store.last_event() == 0
    run = store.create_run(_pipeline(), notebook=tmp_path / "nb.ipynb")
    store.update_run(run.id, state=RunState.running, started=1.0)
    store.update_step(run.id, "a", state=RunState.running, started=1.0)
    store.update_step(run.id, "a", kernel_pid=os.getpid())  # bookkeeping: no event
    store.update_run(run.id, cancel_requested=True)  # bookkeeping: no event
    store.update_step(run.id, "a", executed_notebook="/x.ipynb")  # visible, state unchanged
    store.update_step(run.id, "a", state=RunState.succeeded, finished=2.0)
    events = store.events_after(0)
    assert [(e.kind, e.step, e.state) for e in events] == [
        ("run", None, "queued"),
        ("run", None, "running"),
        ("step", "a", "running"),
        ("step", "a", "running"),
        ("step", "a", "succeeded"),
    ]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert all(e.run_id == run.id for e in events)
    assert store.last_event() == events[-1].seq
    assert [e.seq for e in store.events_after(events[2].seq)] == [e.seq for e in events[3:]]


def test_other_processes_recovery_and_pruning_are_events(tmp_path):
    db = tmp_path / "runs.sqlite"
    store = RunStore(db)
    run = store.create_run(_pipeline(), notebook=tmp_path / "nb.ipynb")
    cursor = store.last_event()
    # Another process changes the run: this connection sees it as the next event.
    code = (
        "from jupyter_pipeline.store import RunStore; from jupyter_pipeline.model import RunState;"
        f"RunStore({str(db)!r}).update_step({run.id!r}, 'b', state=RunState.running)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    (ev,) = store.events_after(cursor)
    assert (ev.kind, ev.step, ev.state) == ("step", "b", "running")
    # Its runner is gone (a pid that has exited): reopening marks it lost, with events.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.update_run(run.id, pid=dead.pid, pid_created=1.0)
    cursor = store.last_event()
    RunStore(db)  # opening recovers lost runs
    story = [(e.kind, e.step, e.state) for e in store.events_after(cursor)]
    assert story == [
        ("step", "a", "cancelled"),
        ("step", "b", "failed"),
        ("run", None, "failed"),
    ]
    assert store.get_run(run.id).error == "runner lost"
    cursor = store.last_event()
    store.prune(keep=0)
    (gone,) = store.events_after(cursor)
    assert (gone.kind, gone.run_id, gone.state) == ("deleted", run.id, None)
