"""The ipywidgets run monitor driving real runs (detached runner processes, real kernels)."""

from __future__ import annotations

import time

import psutil
import pytest
from helpers import alive, code_cell, gone_within, write_nb

from jupyter_pipeline.store import RunStore
from jupyter_pipeline.widgets import PipelineError, RunMonitor, monitor, run

pytestmark = pytest.mark.kernel


@pytest.fixture
def store(tmp_path):
    db = RunStore(tmp_path / "store" / "runs.sqlite")
    yield db
    db.close()


def _until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_run_shows_states_live_log_lines_and_the_failing_step(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "nb.ipynb",
        [
            code_cell("lr = 0.5", "pipeline-parameters"),
            code_cell("import os, time", "imports"),
            # train runs until the test saw it running (a file `go` releases it): a fixed
            # sleep could end before a loaded machine showed the printed line.
            code_cell(
                "print('training with', lr, flush=True)\n"
                "deadline = time.monotonic() + 300\n"
                "while not os.path.exists('go') and time.monotonic() < deadline:\n"
                "    time.sleep(0.05)\n"
                "score = lr * 2",
                "step:train",
            ),
            code_cell("print(score)\nraise RuntimeError('bad score')", "step:check"),
            code_cell("print('never')", "step:report", "prev:check"),
        ],
    )
    mon = run(str(nb_path), lr=0.1, store=store, max_parallel=1)
    assert isinstance(mon, RunMonitor)
    assert mon.run.parameters == {"lr": 0.1}
    # While train runs, its printed line is in the monitor's log area.
    try:
        _until(lambda: mon.step_states["train"] == "running", 120, "train running")
        _until(lambda: "training with 0.1" in mon.logs_html.value, what="the printed line")
        assert mon.state == "running"
        assert 'data-state="running"' in mon.steps_html.value
        assert mon.cancel_button.layout.display != "none"
    finally:
        (tmp_path / "go").touch()

    done = mon.wait(timeout=180)
    assert done.state.value == "failed"
    assert mon.step_states == {"train": "succeeded", "check": "failed", "report": "skipped"}
    # States are words, durations are shown, the failing step's error names its cell.
    steps = mon.steps_html.value
    for word in ("succeeded", "failed", "skipped"):
        assert f"&#9679; {word}</span>" in steps
    assert "check failed (cell 3)" in mon.error_html.value
    assert "RuntimeError: bad score" in mon.error_html.value
    assert mon.cancel_button.layout.display == "none"
    assert "lr=0.1" in mon.header.value
    # The monitor stops following a finished run.
    assert mon._thread is not None and not mon._thread.is_alive()


def test_cancel_button_stops_the_run_and_leaves_no_process(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "long.ipynb",
        [
            code_cell("import time", "imports"),
            code_cell("print('sleeping', flush=True)\ntime.sleep(120)\nx = 1", "step:long"),
            code_cell("print(x)", "step:after"),
        ],
    )
    mon = run(str(nb_path), store=store)
    _until(lambda: "sleeping" in mon.logs_html.value, what="the long step to print")
    runner = psutil.Process(store.runner_of(mon.run_id)[0])
    kernel_pid = store.step_extra(mon.run_id, "long")["kernel_pid"]
    assert kernel_pid and psutil.pid_exists(kernel_pid)

    mon.cancel_button.click()
    assert mon.cancel_button.disabled
    done = mon.wait(timeout=60)
    assert done.state.value == "cancelled"
    assert mon.step_states == {"long": "cancelled", "after": "cancelled"}
    # No kernel and no runner process of the run remains.
    # Seconds each on a loaded machine; helpers.alive reads the status of a process that may
    # exit meanwhile (status() after is_running() raised then), a zombie counting as gone.
    assert gone_within(kernel_pid), "the kernel outlived the cancel"
    _until(lambda: not alive(runner), 30, "the runner to go")
    assert not any(
        mon.run_id in " ".join(p.info["cmdline"] or [])
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"]
    )
    assert mon.cancel() is False  # already finished


def test_monitor_attaches_to_an_existing_run_and_rejects_unknown_ids(tmp_path, store):
    nb_path = write_nb(tmp_path / "ok.ipynb", [code_cell("y = 2", "step:one")])
    first = run(str(nb_path), store=store)
    assert first.wait(timeout=180).state.value == "succeeded"
    attached = monitor(first.run_id[:6], store=store)
    assert attached.run_id == first.run_id
    assert attached.step_states == {"one": "succeeded"}
    assert attached._thread is None  # finished: nothing to follow
    with pytest.raises(PipelineError, match="no run 'nope'"):
        monitor("nope", store=store)


def test_run_refuses_bad_input_with_a_clear_message(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "bad.ipynb",
        [code_cell("lr = 0.5", "pipeline-parameters"), code_cell("print(lr)", "step:a")],
    )
    with pytest.raises(PipelineError, match=r"bad\.ipynb: .*nope"):
        run(str(nb_path), nope=1, store=store)
    with pytest.raises(PipelineError, match=r"missing\.ipynb: no such file"):
        run(str(tmp_path / "missing.ipynb"), store=store)
    err = PipelineError("x.ipynb: cell 2: undefined name")
    assert err._render_traceback_() == [
        "\x1b[31mPipelineError\x1b[0m: x.ipynb: cell 2: undefined name"
    ]
    assert store.list_runs() == []
