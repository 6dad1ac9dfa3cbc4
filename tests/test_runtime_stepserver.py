"""Step drivers with real kernels: a step runs in a process forked from the step server,
reports its kernel, its saved outputs (before its result) and its failures like run_step,
stops a warm-up on request, and nothing outlives the server."""

from __future__ import annotations

import os
import threading
import time

import psutil
import pytest
from helpers import alive, cmdline
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_pipeline.model import Pipeline, Step
from jupyter_pipeline.runtime import StepRequest, build_step_notebook
from jupyter_pipeline.runtime.forkserver import ForkServer
from jupyter_pipeline.runtime.stepserver import StepDriverError, StepServer

pytestmark = pytest.mark.kernel


def _request(tmp, cells, outputs=(), **step):
    nb = new_notebook(cells=[new_code_cell(src) for src in cells])
    step.setdefault("cells", list(range(len(cells))))
    pipeline = Pipeline(
        name="p",
        notebook="nb.ipynb",
        steps=[Step(name="s", display_name="s", outputs=list(outputs), **step)],
    )
    return StepRequest(
        step_notebook=build_step_notebook(nb, pipeline, "s"),
        step="s",
        output_dir=str(tmp / "out"),
        executed_notebook=str(tmp / "executed.ipynb"),
        log_path=str(tmp / "log.txt"),
        cwd=str(tmp),
        outputs=list(outputs),
    )


def _gone(pid: int) -> bool:
    try:
        return not alive(psutil.Process(pid))
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def server():
    s = StepServer()
    s.start()
    deadline = time.time() + 120
    while not s.ready():
        assert time.time() < deadline, "the step server never finished its imports"
        time.sleep(0.05)
    yield s
    s.close()


def test_a_step_runs_in_a_driver_and_reports_as_it_goes(tmp_path, server):
    events = []
    with ForkServer(str(tmp_path)) as forks:
        result = server.run_step(
            _request(tmp_path, ["import os\nx = os.getpid()\nprint('pid', x)"], outputs=["x"]),
            on_kernel=lambda pid: events.append(("kernel", pid)),
            on_saved=lambda saved, metrics: events.append(("saved", [v.name for v in saved])),
            fork_server=forks,
        )
        children = {c.pid for z in forks._zygotes for c in psutil.Process(z.proc.pid).children()}
    assert result.status == "succeeded", result.failure
    assert [v.name for v in result.outputs] == ["x"]
    assert [e[0] for e in events] == ["kernel", "saved"] and events[1][1] == ["x"]
    kernel = events[0][1]
    assert kernel != os.getpid()
    # The kernel was forked from the fork server (through the driver), not spawned.
    assert kernel in children or not psutil.pid_exists(kernel)
    log = (tmp_path / "log.txt").read_text()
    assert f"pid {kernel}" in log


def test_failures_and_aborted_warm_ups_come_back(tmp_path, server):
    result = server.run_step(_request(tmp_path / "a", ["y = 1 / 0"]))
    assert result.status == "failed"
    assert result.failure.cell == 0 and result.failure.ename == "ZeroDivisionError"

    def ready():
        raise RuntimeError("cancelled while warming")

    pids: list[int] = []
    with pytest.raises(RuntimeError, match="cancelled while warming"):
        server.run_step(
            _request(tmp_path / "b", ["print('never')"]), ready=ready, on_kernel=pids.append
        )
    assert pids and _gone(pids[0])  # the driver shut its kernel down before answering

    # A request run_step rejects is an error of the driver, with the original type named.
    bad = _request(tmp_path / "c", ["z = 1"]).model_copy(update={"kernel_name": "no-such-kernel"})
    with pytest.raises(StepDriverError) as err:
        server.run_step(bad)
    assert err.value.ename == "NoSuchKernel"


def test_closing_the_server_stops_its_drivers_and_kernels(tmp_path):
    server = StepServer()
    started: list[int] = []
    done: list[Exception] = []

    def go():
        try:
            server.run_step(
                _request(tmp_path, ["import time\ntime.sleep(300)"]), on_kernel=started.append
            )
        except StepDriverError as exc:
            done.append(exc)

    t = threading.Thread(target=go)
    t.start()
    deadline = time.time() + 120
    while not started:
        assert time.time() < deadline, "the kernel never started"
        time.sleep(0.1)
    proc = server._proc
    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert any("stepserver" in cmdline(p) for p in family)
    server.close()
    t.join(60)
    assert not t.is_alive() and done  # the driver died: an error, not a hang
    # An orphaned kernel notices its parent's death within a second on an idle machine; on a
    # loaded one later, so wait for the processes rather than a fixed second.
    deadline = time.time() + 30
    while any(alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in family)
