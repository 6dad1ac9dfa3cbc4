"""Kernels forked from a fork server behave like fresh ones (real kernels, spawned vs forked)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from helpers import alive, cmdline, stream_text
from nbformat.v4 import new_code_cell, new_notebook

from jupyter_pipeline.runtime.api import StepRequest
from jupyter_pipeline.runtime.execute import kill_kernel, run_step
from jupyter_pipeline.runtime.forkserver import ForkError, ForkServer, supported

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(not supported(), reason="fork server needs Linux"),
]

# What a cell can observe of its interpreter's start. Paths of the per-kernel connection
# file differ between any two kernels; they are replaced by <cf>.
FACTS = """\
import json, os, stat, sys
cf = sys.argv[sys.argv.index('-f') + 1]
norm = lambda xs: ['<cf>' if x == cf else x for x in xs]
facts = {
    'path': ['<cwd>' if p == os.getcwd() else p for p in sys.path],
    'cwd': os.getcwd(),
    'argv': norm(sys.argv),
    'orig_argv': norm(sys.orig_argv),
    'executable': sys.executable,
    'env': {k: v for k, v in os.environ.items()
            if k.startswith(('JPY_', 'MPL', 'PYTHON', 'PYDEVD', 'CLICOLOR', 'PAGER', 'TERM'))},
    'shell': type(get_ipython()).__module__ + '.' + type(get_ipython()).__name__,
    'main': [sys.modules['__main__'].__name__, sorted(vars(sys.modules['__main__']))[:12]],
    'stdin': [stat.S_ISFIFO(os.fstat(0).st_mode), os.read(0, 1)],
    'leader': os.getpgid(0) == os.getpid() and os.getsid(0) == os.getpid(),
    'own_modules': sorted(m for m in sys.modules if m.startswith('jupyter_pipeline')),
}
print(json.dumps(facts, default=repr))
"""
PLOT = """\
import matplotlib
import matplotlib.pyplot as plt
print(matplotlib.get_backend())
%matplotlib inline
plt.plot([1, 2, 3])
plt.show()
"""
OTHERS = [
    "import localmod\nprint('local', localmod.VALUE)",
    "import warnpkg",  # warns and prints at import: the cell must show both
    # decides at import whether it runs in a kernel
    "import ipyaware\nprint(ipyaware.MODE)",
    # keeps sys.stderr at import: writes to the kernel's
    "import logpkg\nlogpkg.hello()",
    "!echo shell-says-hi",
    # reads the kernel's own command line at import
    "import argvpkg, os\nprint(os.path.basename(argvpkg.PROGRAM))",
    # decides a display default at import by asking for the shell (replayed in the kernel)
    "import pandas as pd\nprint(pd.get_option('display.max_columns'))",
    "import numpy as np, random\nprint('draws', np.random.rand(), random.random())",
]


def _notebook(cells: list[str]) -> dict:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "P"}
    return nb


def _run(folder: Path, cells: list[str], server: ForkServer | None, tag: str, **kw):
    """Run a notebook as a step; return (result, executed notebook, log text, kernel pid)."""
    pids: list[int] = []
    ppids: list[int] = []

    def on_kernel(pid: int) -> None:
        pids.append(pid)
        with_parent = psutil.Process(pid).ppid()
        ppids.append(with_parent)

    out = folder.parent / f"out-{tag}"
    request = StepRequest(
        step_notebook=_notebook(cells),
        step=tag,
        output_dir=str(out / "values"),
        executed_notebook=str(out / "executed.ipynb"),
        cwd=str(folder),
        log_path=str(out / "log.txt"),
        **kw,
    )
    result = run_step(request, on_kernel=on_kernel, fork_server=server)
    executed = nbformat.read(request.executed_notebook, as_version=4)
    log = Path(request.log_path).read_text()
    forked = ppids[0] != os.getpid()
    return result, executed, log, forked


def _texts(cell) -> list[str]:
    """A cell's outputs as comparable text (image data reduced to its mime type)."""
    out: list[str] = []
    last_stream = None
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            # A loaded kernel may flush one print in two messages ("20", then "\n"):
            # consecutive output of one stream is one text, as a notebook shows it.
            if last_stream == o["name"]:
                out[-1] += o["text"]
            else:
                out.append(f"{o['name']}: {o['text']}")
            last_stream = o["name"]
            continue
        last_stream = None
        if o["output_type"] in ("display_data", "execute_result"):
            out.append(" ".join(sorted(o["data"])))
        else:
            out.append(o["output_type"])
    return out


def _settle(server: ForkServer) -> dict:
    """Wait until a zygote has worked through its pre-import list (retired zygotes are
    replaced meanwhile); its status."""
    deadline = time.time() + 120
    while True:
        status = server.status()
        if (not status["pending"] and not status["dirty"]) or time.time() > deadline:
            return status
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A notebook folder with a local module, and a package on PYTHONPATH that warns."""
    root = tmp_path_factory.mktemp("fork")
    folder = root / "nb"
    folder.mkdir()
    (folder / "localmod.py").write_text("VALUE = 1\n")
    # Shadows a standard module: kernels (and the zygote) import their own machinery with
    # the notebook's folder off sys.path, so this is never imported.
    (folder / "selectors.py").write_text("raise ImportError('the notebook folder shadowed')\n")
    lib = root / "lib" / "warnpkg"
    lib.mkdir(parents=True)
    (lib / "__init__.py").write_text(
        "import warnings\nprint('warnpkg says hi')\nwarnings.warn('warnpkg imported')\n"
    )
    (lib.parent / "ipyaware.py").write_text(
        textwrap.dedent(
            """
            try:
                shell = get_ipython()
            except NameError:
                MODE = 'plain python'
            else:
                MODE = 'kernel' if hasattr(shell, 'kernel') else 'terminal'
            """
        )
    )
    (lib.parent / "argvpkg.py").write_text("import sys\nPROGRAM = sys.argv[0]\n")
    (lib.parent / "logpkg.py").write_text(
        textwrap.dedent(
            """
            import logging
            log = logging.getLogger('logpkg')
            log.addHandler(logging.StreamHandler())
            log.propagate = False
            def hello():
                log.warning('logpkg says hello')
            """
        )
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", str(lib.parent))
        yield folder


@pytest.fixture
def server(world):
    """A fork server for the notebook folder, made in the test (pytest changes the
    environment between phases, and a kernel whose environment differs is not forked)."""
    servers: list[ForkServer] = []

    def make(modules: list[str]) -> ForkServer:
        servers.append(ForkServer(str(world), modules=modules))
        servers[-1].start()
        return servers[-1]

    yield make
    for server in servers:
        zygotes = [psutil.Process(z.proc.pid) for z in server._zygotes]
        server.close()
        assert not any(alive(z) for z in zygotes)


def test_forked_kernel_is_like_a_fresh_one(world, server):
    folder = world
    modules = ["numpy", "matplotlib.pyplot", "pandas", "localmod", "warnpkg", "ipyaware"]
    modules += ["argvpkg", "logpkg", "json"]
    server = server(modules)
    status = _settle(server)
    # warnpkg printed and warned at import, ipyaware asked for the IPython shell: a zygote
    # that imported one of them forks no kernel; one without them took over.
    assert server.excluded.keys() == {"warnpkg", "ipyaware", "argvpkg"}
    assert status["dirty"] is None
    assert status["loaded"] == ["numpy", "matplotlib.pyplot", "pandas", "logpkg", "json"]
    assert status["skipped"] == {"localmod": "found in the notebook's folder"}
    # The local module may change: each kernel imports it, from the file as it is then.
    (folder / "localmod.py").write_text("VALUE = 2  # changed after the server started\n")
    cells = [FACTS, PLOT, *OTHERS]
    spawned = _run(folder, cells, None, "spawned")
    forked = [_run(folder, cells, server, f"forked{i}") for i in range(2)]
    assert not spawned[3] and all(f[3] for f in forked)  # really spawned / forked

    facts = json.loads(stream_text(spawned[1].cells[0]))
    assert facts["leader"] and facts["cwd"] == str(folder)
    for result, nb, log, _ in [spawned, *forked]:
        assert result.status == "succeeded", result.failure
        assert json.loads(stream_text(nb.cells[0])) == facts
        plot = _texts(nb.cells[1])
        assert plot[0] == "stdout: module://matplotlib_inline.backend_inline\n"
        assert "image/png text/plain" in plot
        assert _texts(nb.cells[2]) == ["stdout: local 2\n"]
        warn = _texts(nb.cells[3])
        assert warn[0] == "stdout: warnpkg says hi\n"
        assert "UserWarning: warnpkg imported" in warn[1] and warn[1].startswith("stderr")
        assert _texts(nb.cells[4]) == ["stdout: kernel\n"]
        assert _texts(nb.cells[5]) == ["stderr: logpkg says hello\n"]
        assert _texts(nb.cells[6]) == ["stdout: shell-says-hi\r\n"]  # through a pty
        assert "shell-says-hi" in log
        assert _texts(nb.cells[7]) == ["stdout: ipykernel_launcher.py\n"]
        assert _texts(nb.cells[8]) == ["stdout: 20\n"]
        assert [_texts(c) for c in nb.cells[:9]] == [_texts(c) for c in spawned[1].cells[:9]]
    # Unseeded global RNGs: every kernel draws its own numbers.
    draws = {_texts(nb.cells[9])[0] for _, nb, _, _ in [spawned, *forked]}
    assert len(draws) == 3


def test_kill_kernel_stops_a_forked_kernel_and_its_children(world, server):
    folder = world
    server = server([])
    pids: list[int] = []
    done: list = []
    request = StepRequest(
        step_notebook=_notebook(
            ["import subprocess, time\nchild = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)"]
        ),
        step="slow",
        output_dir=str(folder.parent / "slow" / "values"),
        executed_notebook=str(folder.parent / "slow" / "executed.ipynb"),
        cwd=str(folder),
        log_path=str(folder.parent / "slow.log"),
    )
    thread = threading.Thread(
        target=lambda: done.append(run_step(request, on_kernel=pids.append, fork_server=server))
    )
    thread.start()
    deadline = time.time() + 60
    family: list[psutil.Process] = []
    while not any("sleep" in cmdline(p) for p in family):
        assert time.time() < deadline, "the kernel's child never started"
        time.sleep(0.1)
        if not pids:
            continue
        try:
            kernel = psutil.Process(pids[0])
            family = [kernel, *kernel.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
    assert kernel.ppid() != os.getpid()  # forked
    assert kill_kernel(pids[0])
    thread.join(60)
    assert done and done[0].status == "failed"
    deadline = time.time() + 15
    while any(alive(p) for p in family) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(alive(p) for p in family)
    # The zygote reaped it: no zombie of ours is left behind.
    deadline = time.time() + 15
    while pids[0] in server.status()["children"] and time.time() < deadline:
        time.sleep(0.1)
    assert pids[0] not in server.status()["children"]
    assert not psutil.pid_exists(pids[0])


def test_spawned_when_forking_would_not_be_faithful(world, server, monkeypatch):
    folder = world
    server = server([])
    # A step with its own environment: libraries read it at import.
    result, nb, _, forked = _run(
        folder, ["import os\nprint(os.environ['STEP_VAR'])"], server, "env", env={"STEP_VAR": "v"}
    )
    assert result.status == "succeeded" and not forked
    assert _texts(nb.cells[0]) == ["stdout: v\n"]

    cmd = [sys.executable, "-m", "ipykernel_launcher", "-f", "cf.json"]
    assert server.unfit(cmd, None, str(folder)) is None
    assert "another interpreter" in server.unfit(["/usr/bin/python3", *cmd[1:]], None, None)
    assert "not ipykernel's" in server.unfit([sys.executable, "-m", "other"], None, None)
    assert "working directory" in server.unfit(cmd, None, str(folder.parent))
    monkeypatch.setenv("SOMETHING_NEW", "1")  # the environment changed since the server started
    assert "SOMETHING_NEW" in server.unfit(cmd, None, str(folder))


def test_zygote_exits_with_its_runner(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from jupyter_pipeline.runtime.forkserver import ForkServer
        server = ForkServer({str(tmp_path)!r})
        server.start()
        print(server._zygotes[0].proc.pid, server._zygotes[0].dir, flush=True)
        time.sleep(300)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid, folder = runner.stdout.readline().split()
        zygote = psutil.Process(int(pid))
        assert os.path.isdir(folder)
        # start() returns once the zygote is spawned; while it is still exec'ing, its
        # /proc command line reads empty (seen on a loaded CI machine).
        deadline = time.time() + 15
        while not cmdline(zygote) and time.time() < deadline:
            time.sleep(0.05)
        assert re.search(r"forkserver", cmdline(zygote))
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait()
    deadline = time.time() + 15
    while alive(zygote) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(zygote)
    # Its folder (socket, log) went with it: the runner could not remove it.
    assert not os.path.exists(folder)


def test_starting_a_fork_server_removes_folders_of_dead_ones(tmp_path, monkeypatch):
    # A short private temporary directory: a Unix socket path has at most 107 bytes.
    tmp = tempfile.mkdtemp(prefix="jpt-")
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    try:
        gone = subprocess.Popen(["true"])
        gone.wait()
        stale = Path(tmp, f"jp-forkserver-{gone.pid}-abcd1234")  # its owner is gone
        stale.mkdir()
        (stale / "zygote.log").write_text("old")
        live = Path(tmp, f"jp-forkserver-{os.getppid()}-abcd1234")  # its owner runs
        live.mkdir()
        other = Path(tmp, "jp-forkserver-notapid")  # not one of ours: left alone
        other.mkdir()
        with ForkServer(str(tmp_path)) as server:
            server.start()
            assert server._zygotes[0].dir.startswith(os.path.join(tmp, "jp-forkserver-"))
            assert not stale.exists()
            assert live.exists() and other.exists()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_fork_server_that_fails_to_start_says_why(tmp_path):
    # The zygote dies while it starts, saying why on its stderr (its log): that must be in
    # the error, not just an exit code.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os, sys\n"
        "sys.stderr.write('zygote trouble: no such thing\\n')\n"
        "sys.stderr.flush()\n"
        "os._exit(3)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    server = ForkServer(str(tmp_path), env=env)
    try:
        with pytest.raises(ForkError, match="zygote trouble: no such thing"):
            server.status()
        # Once it has exited, later uses fail with its exit code and the same explanation.
        server._zygotes[0].proc.wait(10)
        with pytest.raises(ForkError, match=r"(?s)code 3.*zygote trouble"):
            server.status()
    finally:
        server.close()
