"""``jupyter-pipeline run/runs/show/logs/cancel/verify`` with real kernels and processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import papermill
import psutil
import pytest
from helpers import alive, cmdline, stream_text, write_nb
from helpers import code_cell as _cell
from helpers import file_digest as _digest
from nbformat.v4 import new_markdown_cell

from jupyter_pipeline.cli import main
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.verify import compare_notebooks
from jupyter_pipeline.store import RUNNER_LOST, RunStore

PARAMS_NB = [
    new_markdown_cell("# Parameters"),
    _cell("n = 3\nlabel = 'run'", "parameters"),
    _cell("import math", "imports"),
    _cell("base = list(range(n))\nprint('base', base)", "step:load"),
    _cell("total = sum(base)\nprint(label, total)\ntotal", "step:sum"),
    _cell("root = math.sqrt(total)\nprint(f'{root:.3f}')", "step:root"),
]


@pytest.mark.kernel
def test_run_with_parameter_and_merged_output_equals_papermill(tmp_path, capsys):
    nb = write_nb(tmp_path / "params.ipynb", PARAMS_NB)
    before = _digest(nb)
    store = tmp_path / "runs.sqlite"
    out = tmp_path / "merged.ipynb"
    code = main(
        ["run", str(nb), "-p", "n=5", "-p", "label=five", "-o", str(out), "--store", str(store)]
    )
    assert code == 0, capsys.readouterr()
    printed = capsys.readouterr().out
    assert "succeeded" in printed and "merged notebook" in printed

    straight = tmp_path / "straight.ipynb"
    papermill.execute_notebook(
        str(nb),
        str(straight),
        parameters={"n": 5, "label": "five"},
        progress_bar=False,
        language="python",
    )
    merged = nbformat.read(str(out), as_version=4)
    assert compare_notebooks(nbformat.read(str(straight), as_version=4), merged) == []
    # -p reached the step; as in papermill's output, an injected-parameters cell follows
    # the parameters cell (cell 1), so the sum cell (source cell 4) is at 5.
    assert merged.cells[2].metadata.tags == ["injected-parameters"]
    assert stream_text(merged.cells[5]) == "five 10\n"
    assert _digest(nb) == before

    run = RunStore(store).list_runs()[0]
    assert run.parameters == {"n": 5, "label": "five"}

    # runs / show / logs read the same store.
    assert main(["runs", "--store", str(store)]) == 0
    assert run.id in capsys.readouterr().out
    assert main(["show", run.id[:4], "--json", "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [s["state"] for s in shown["steps"]] == ["succeeded"] * 3
    assert main(["logs", run.id, "sum", "--store", str(store)]) == 0
    assert "five 10" in capsys.readouterr().out
    assert main(["logs", run.id, "nope", "--store", str(store)]) == 2


def test_bad_parameters_exit_2(tmp_path, capsys):
    nb = write_nb(tmp_path / "params.ipynb", PARAMS_NB)
    store = str(tmp_path / "runs.sqlite")
    assert main(["run", str(nb), "-p", "m=1", "--store", store]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'm'" in err and "n, label" in err
    assert main(["run", str(nb), "-p", "n=many", "--store", store]) == 2
    assert "parameter n is int" in capsys.readouterr().err
    assert main(["run", str(nb), "-p", "oops", "--store", store]) == 2
    assert main(["show", "ffffffff", "--store", store]) == 2
    other = nbformat.read(str(nb), as_version=4)
    other.metadata["kernelspec"] = {"name": "no-such-kernel", "display_name": "Nope"}
    nbformat.write(other, str(tmp_path / "other.ipynb"))
    assert main(["run", str(tmp_path / "other.ipynb"), "--store", store]) == 2
    assert "kernel 'no-such-kernel' is not installed" in capsys.readouterr().err
    assert RunStore(store).list_runs() == []  # nothing ran


def test_analysis_errors_stop_the_run(tmp_path, capsys):
    nb = write_nb(tmp_path / "typo.ipynb", [_cell("x = 1", "step:a"), _cell("print(xx)", "step:b")])
    assert main(["run", str(nb), "--store", str(tmp_path / "s.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "cell 1" in err and "xx" in err
    assert RunStore(tmp_path / "s.sqlite").list_runs() == []


@pytest.mark.kernel
def test_failure_exit_1_prints_step_cell_and_error(tmp_path, capsys):
    nb = write_nb(
        tmp_path / "fail.ipynb",
        [
            _cell("x = 1", "step:a"),
            _cell("print('about to fail')\ny = x / 0", "step:bad"),
            _cell("print(y)", "step:after"),
            _cell("gen = (i for i in range(3))", "step:gen"),
            _cell("print(list(gen))", "step:use-gen"),
        ],
    )
    store = tmp_path / "runs.sqlite"
    assert main(["run", str(nb), "--store", str(store)]) == 1
    err = capsys.readouterr().err
    assert "step bad failed in cell 1: ZeroDivisionError: division by zero" in err
    assert "y = x / 0" in err  # the source cell
    run = RunStore(store).list_runs()[0]
    states = {s.step: s for s in run.steps}
    assert states["after"].state is RunState.skipped
    assert states["a"].state is RunState.succeeded
    # An output that cannot be passed fails its producer with a message naming it.
    assert states["gen"].state is RunState.failed
    assert "gen" in states["gen"].error and "generator" in states["gen"].error
    assert states["use-gen"].state is RunState.skipped


_SLOW = [
    _cell("import subprocess, time", "imports"),
    _cell("x = 1", "step:first"),
    _cell("child = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\ny = x", "step:slow"),
    _cell("print(y)", "step:last"),
]


def _start_cli_run(
    tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, RunStore, str]:
    nb = write_nb(tmp_path / "slow.ipynb", _SLOW)
    store_path = tmp_path / "runs.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter_pipeline.cli", "run", str(nb), "--store", str(store_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.time() + 180  # generous: a loaded CI machine starts kernels slowly
    while time.time() < deadline:
        if store_path.exists():
            store = RunStore(store_path)
            runs = store.list_runs(limit=1)
            if runs and runs[0].steps[1].state is RunState.running:
                extra = store.step_extra(runs[0].id, "slow")
                if extra["kernel_pid"]:
                    # Wait until the step spawned its child, so we test that it dies too.
                    try:
                        children = psutil.Process(extra["kernel_pid"]).children()
                    except psutil.NoSuchProcess:
                        children = []
                    if any("sleep" in cmdline(c) for c in children):
                        return proc, store, runs[0].id
            store.close()
        assert proc.poll() is None, "the runner exited early"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the slow step never started")


def _family(store: RunStore, run_id: str) -> list[psutil.Process]:
    pid = store.step_extra(run_id, "slow")["kernel_pid"]
    kernel = psutil.Process(pid)
    return [kernel, *kernel.children(recursive=True)]


def _all_gone(procs: list[psutil.Process]) -> bool:
    """True once every process has exited (a zombie waiting for its reaper counts as gone)."""
    deadline = time.time() + 15
    while any(alive(p) for p in procs):
        if time.time() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.kernel
def test_sigkilled_runner_is_runner_lost_on_reopen(tmp_path):
    proc, store, run_id = _start_cli_run(tmp_path)
    family = _family(store, run_id)
    store.close()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)

    reopened = RunStore(tmp_path / "runs.sqlite")
    run = reopened.get_run(run_id)
    assert (run.state, run.error) == (RunState.failed, RUNNER_LOST)
    states = {s.step: s.state for s in run.steps}
    assert states == {
        "first": RunState.succeeded,  # finished work is kept
        "slow": RunState.failed,
        "last": RunState.cancelled,
    }
    assert run.steps[0].outputs  # and so are its outputs' records
    assert _all_gone(family)  # the orphaned kernel and its child were stopped


@pytest.mark.kernel
def test_sigkilled_runner_leaves_no_temporary_folders(tmp_path):
    # The runner's temporary folders (kernel sockets, the fork server's socket and log) in
    # a temporary directory of this test's own, so other processes' folders do not count.
    tmp = Path(tempfile.mkdtemp(prefix="jpt-"))  # short: Unix socket paths are limited
    env = dict(os.environ, TMPDIR=str(tmp))
    try:
        proc, store, run_id = _start_cli_run(tmp_path, env)
        family = _family(store, run_id)
        store.close()
        assert any(p.name.startswith("jp-kernel-") for p in tmp.iterdir())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert _all_gone(family)
        # The fork server removed its own folder when its runner went.
        deadline = time.time() + 15
        while any(p.name.startswith("jp-forkserver-") for p in tmp.iterdir()):
            assert time.time() < deadline, sorted(p.name for p in tmp.iterdir())
            time.sleep(0.1)
        # The next runner removes the kernel folders the killed one could not.
        quick = write_nb(tmp_path / "quick.ipynb", [_cell("x = 1", "step:one")])
        command = ["run", str(quick), "--store", str(tmp_path / "runs.sqlite")]
        done = subprocess.run(
            [sys.executable, "-m", "jupyter_pipeline.cli", *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert not [p.name for p in tmp.iterdir() if p.name.startswith("jp-")]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.kernel
def test_cancel_command_stops_runner_in_other_process(tmp_path, capsys):
    proc, store, run_id = _start_cli_run(tmp_path)
    family = _family(store, run_id)
    assert main(["cancel", run_id, "--store", str(store.path)]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert proc.wait(timeout=30) == 1
    run = store.get_run(run_id)
    assert run.state is RunState.cancelled
    assert [s.state for s in run.steps] == [
        RunState.succeeded,
        RunState.cancelled,
        RunState.cancelled,
    ]
    assert _all_gone(family)
    assert main(["cancel", run_id, "--store", str(store.path)]) == 0  # already over: no-op
    assert "already cancelled" in capsys.readouterr().out


@pytest.mark.kernel
def test_verify_reports_differing_cells(tmp_path, capsys):
    good = write_nb(tmp_path / "good.ipynb", PARAMS_NB)
    before = _digest(good)
    store = str(tmp_path / "runs.sqlite")
    assert main(["verify", str(good), "--store", store]) == 0
    assert "all 5 code cells give the same output" in capsys.readouterr().out
    assert _digest(good) == before

    # Unseeded randomness differs between any two runs: verify must say which cell.
    flaky = write_nb(
        tmp_path / "flaky.ipynb",
        [_cell("import random", "imports"), _cell("print(random.random())", "step:draw")],
    )
    assert main(["verify", str(flaky), "--store", store]) == 1
    out = capsys.readouterr().out
    assert "cell 1 (step draw) differs" in out and "1 of 2 code cells differ" in out


@pytest.mark.kernel
def test_verify_leaves_skip_cells_out(tmp_path, capsys):
    # The pipeline does not run a skip-tagged cell; the straight run does: not a difference.
    nb = write_nb(
        tmp_path / "skips.ipynb",
        [
            _cell("x = 2\nprint('x', x)", "step:first"),
            _cell("print('only in a straight run')", "skip"),
            _cell("print('twice', 2 * x)"),  # untagged: step first goes on around the skip
        ],
    )
    assert main(["verify", str(nb), "--store", str(tmp_path / "runs.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "left out of the comparison: 1 skip-tagged cell(s) (1)" in out
    assert "all 2 code cells give the same output" in out
