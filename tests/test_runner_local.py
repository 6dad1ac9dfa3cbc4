"""LocalRunner with real kernels: parallelism, pre-warming, cache, failure, retries, cancel."""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from helpers import alive, cmdline, stream_text, write_nb
from helpers import code_cell as _cell
from helpers import file_digest as _digest
from nbformat.v4 import new_markdown_cell

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.store import RunStore

pytestmark = pytest.mark.kernel


def _steps(run):
    return {s.step: s for s in run.steps}


def _overlap(a, b) -> bool:
    return a.started < b.finished and b.started < a.finished


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "store" / "runs.sqlite")


DIAMOND = [
    new_markdown_cell("# Diamond"),
    _cell("import time", "imports"),
    _cell("x = 1\nprint('x is', x)", "step:a"),
    _cell("time.sleep(1.5)\ny = x + 1\nprint('y is', y)", "step:b", "prev:a"),
    _cell("time.sleep(1.5)\nz = x + 2\nprint('z is', z)", "step:c", "prev:a"),
    _cell("total = y + z\nprint('total', total)\ntotal", "step:d", "prev:b", "prev:c"),
]


def test_branches_overlap_prewarm_merge_and_cache(tmp_path, store):
    nb_path = write_nb(tmp_path / "diamond.ipynb", DIAMOND)
    before = _digest(nb_path)
    pipeline = analyze_notebook(nb_path)
    events = []
    runner = LocalRunner(store, max_parallel=2)
    out = tmp_path / "merged.ipynb"
    run = runner.run(
        pipeline, nb_path, output=out, on_event=lambda e: events.append((time.time(), e))
    )

    assert run.state is RunState.succeeded, run
    s = _steps(run)
    assert all(st.state is RunState.succeeded for st in s.values())
    # The two branches ran at the same time; d only after both.
    assert _overlap(s["b"], s["c"])
    assert s["d"].started >= max(s["b"].finished, s["c"].finished)
    assert s["b"].started >= s["a"].finished
    # d's kernel was started (pre-warmed) while b and c were still running.
    warmed = [t for t, e in events if e.kind == "warming" and e.step == "d"]
    assert warmed and warmed[0] < s["b"].finished
    # Recorded paths exist; outputs carry digests.
    for st in s.values():
        assert Path(st.executed_notebook).exists() and Path(st.log_path).exists()
    assert set(s["a"].outputs) == {"x"} and re.fullmatch(r"\w+:[0-9a-f]{32,}", s["a"].digests["x"])
    assert Path(run.run_dir) == store.runs_dir / run.id

    merged = nbformat.read(str(out), as_version=4)
    texts = [stream_text(c) for c in merged.cells if c.cell_type == "code"]
    assert "x is 1\n" in texts and "y is 2\n" in texts and "total 5\n" in texts
    assert merged.cells[5].outputs[-1]["data"]["text/plain"] == "5"
    assert _digest(nb_path) == before  # the source notebook is never touched

    # Second run: everything cached, nothing executed, outputs identical.
    again = runner.run(pipeline, nb_path, output=tmp_path / "merged2.ipynb")
    assert again.state is RunState.succeeded
    assert [st.state for st in again.steps] == [RunState.cached] * 4
    assert _steps(again)["d"].digests == s["d"].digests
    merged2 = nbformat.read(str(tmp_path / "merged2.ipynb"), as_version=4)
    assert [c.get("outputs") for c in merged2.cells] == [c.get("outputs") for c in merged.cells]

    # Edit b only: b and its dependent d re-run, a and c come from the cache.
    cells = list(DIAMOND)
    cells[3] = _cell("time.sleep(0.1)\ny = x + 10\nprint('y is', y)", "step:b", "prev:a")
    write_nb(nb_path, cells)
    edited = runner.run(analyze_notebook(nb_path), nb_path)
    states = {k: v.state for k, v in _steps(edited).items()}
    assert states == {
        "a": RunState.cached,
        "b": RunState.succeeded,
        "c": RunState.cached,
        "d": RunState.succeeded,
    }

    # --no-cache runs everything again.
    fresh = LocalRunner(store, max_parallel=2, cache=False).run(analyze_notebook(nb_path), nb_path)
    assert [st.state for st in fresh.steps] == [RunState.succeeded] * 4


def test_failure_skips_dependents_and_retries(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "fail.ipynb",
        [
            _cell("x = 2", "step:a"),
            _cell("print('before')\ny = x / 0", "step:bad", "prev:a"),
            _cell("z = y + 1", "step:after", "prev:bad"),
            _cell(
                "import pathlib\n"
                "p = pathlib.Path('attempts.txt')\n"
                "n = int(p.read_text()) if p.exists() else 0\n"
                "p.write_text(str(n + 1))\n"
                "assert n >= 1, 'fails the first time'\n"
                "w = x * 3",
                "step:flaky",
                "prev:a",
                "retry:1",
            ),
            _cell("print(w)", "step:uses-flaky", "prev:flaky"),
        ],
    )
    run = LocalRunner(store, max_parallel=2).run(analyze_notebook(nb_path), nb_path)
    s = _steps(run)
    assert run.state is RunState.failed
    assert s["a"].state is RunState.succeeded
    assert s["bad"].state is RunState.failed
    assert s["bad"].error_cell == 1
    assert "ZeroDivisionError" in s["bad"].error
    assert s["after"].state is RunState.skipped  # downstream of the failure
    # The independent branch went on; its step failed once and passed on retry.
    assert s["flaky"].state is RunState.succeeded and s["flaky"].attempts == 2
    assert s["uses-flaky"].state is RunState.succeeded
    # The executed notebook of the failed step is kept, with the error in it.
    executed = nbformat.read(s["bad"].executed_notebook, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "ZeroDivisionError"
    assert (tmp_path / "attempts.txt").read_text() == "2"  # cwd was the notebook's folder


def test_cancel_kills_every_kernel_and_child(tmp_path, store):
    nb_path = write_nb(
        tmp_path / "slow.ipynb",
        [
            _cell("import subprocess, time", "imports"),
            _cell("child = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)", "step:one"),
            _cell("time.sleep(300)", "step:two"),
            _cell("print('never')", "step:three", "prev:one"),
        ],
    )
    runner = LocalRunner(store, max_parallel=2)
    # submit() returns the queued run at once and runs it in a thread (as a server would).
    submitted = runner.submit(analyze_notebook(nb_path), nb_path)
    run_id = submitted.id
    assert submitted.state is RunState.queued
    deadline = time.time() + 120  # generous: a loaded CI machine starts kernels slowly
    family: list[psutil.Process] = []
    # Wait until both kernels are recorded and `one` has spawned its child.
    while not any("sleep" in cmdline(p) for p in family):
        assert time.time() < deadline, "the kernels or the child process never started"
        time.sleep(0.1)
        pids = [store.step_extra(run_id, n)["kernel_pid"] for n in ("one", "two", "three")]
        if not (pids[0] and pids[1]):
            continue
        try:
            kernels = [psutil.Process(p) for p in pids if p and psutil.pid_exists(p)]
            family = kernels + [c for p in kernels for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:  # one exited while we listed; look again
            continue

    assert runner.cancel(run_id[:5])
    run = runner.wait(run_id, timeout=60)
    assert run.state is RunState.cancelled
    assert {st.state for st in run.steps} == {RunState.cancelled}
    assert not any(alive(p) for p in family)  # cancel waited for them


def test_kernels_are_forked_unless_told_not_to(tmp_path, store):
    # A forked kernel's parent is the fork server, not the runner jupyter_client names.
    nb_path = write_nb(
        tmp_path / "fork.ipynb",
        [
            _cell("import os", "imports"),
            _cell("mine = os.getppid() == int(os.environ['JPY_PARENT_PID'])", "step:one"),
            _cell("print('spawned by the runner:', mine)", "step:two"),
        ],
    )
    pipeline = analyze_notebook(nb_path)
    for fork in (True, False):
        out = tmp_path / f"merged-{fork}.ipynb"
        run = LocalRunner(store, fork=fork, cache=False).run(pipeline, nb_path, output=out)
        assert run.state is RunState.succeeded, run
        merged = nbformat.read(out, as_version=4)
        assert stream_text(merged.cells[2]) == f"spawned by the runner: {not fork}\n"
    # The run's fork server ended with the run.
    family = psutil.Process().children(recursive=True)
    assert not [p for p in family if "forkserver" in cmdline(p) and alive(p)]


def test_a_spawned_kernel_says_why_in_its_step_log_and_once_in_the_runners(
    tmp_path, store, monkeypatch, caplog
):
    import json
    import logging
    import sys

    # A kernel spec the fork server cannot fork (not `python -m ipykernel_launcher …`):
    # its kernels are spawned, each start slower; the run says why.
    spec = tmp_path / "jupyter" / "kernels" / "jp-spawned"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-X", "utf8", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "spawned", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb_path = write_nb(
        tmp_path / "spawned.ipynb",
        [_cell("x = 1", "step:one"), _cell("print('x is', x)", "step:two")],
    )
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata["kernelspec"] = {"name": "jp-spawned", "display_name": "spawned"}
    nbformat.write(nb, nb_path)
    with caplog.at_level(logging.WARNING, logger="jupyter_pipeline.runners.local"):
        run = LocalRunner(store, fork=True, prewarm=False, cache=False).run(
            analyze_notebook(nb_path), nb_path
        )
    assert run.state is RunState.succeeded, run
    for step in run.steps:
        log = Path(step.log_path).read_text()
        assert "WARNING: kernel spawned, not forked" in log, log
        assert "the kernel command is not ipykernel's" in log
    warned = [r for r in caplog.records if "spawned, not forked" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelno == logging.WARNING
    assert run.id in warned[0].getMessage()
