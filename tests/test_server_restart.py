"""Runs outlive the server: a real ``jupyter server`` process is SIGKILLed in the middle of a
run and started again; the run goes on (its runner is a detached process) and the history,
logs and event log are intact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import psutil
import pytest
from helpers import nb

pytestmark = pytest.mark.kernel

TOKEN = "restart-test-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``jupyter server`` in a subprocess with the extension enabled, on a fresh port."""

    def __init__(self, tmp: Path, root: Path, store: Path):
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(tmp / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        }
        self.log = open(tmp / f"server-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
                f"--port={self.port}", "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.jpserver_extensions={'jupyter_pipeline.server': True}",
                f"--PipelineApp.store_path={store}",
            ],
            env=env, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (tmp / f"server-{self.port}.log").read_text()
            try:
                self.call("info")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        raise AssertionError("jupyter server did not start")

    def call(self, *parts: str, body: dict | None = None, method: str | None = None):
        req = urllib.request.Request(
            f"{self.base}/jupyter-pipeline/{'/'.join(parts)}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method or ("POST" if body is not None else "GET"),
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _wait(server: Server, run_id: str, until, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = server.call("runs", run_id)
        if until(run):
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: {run}")


def _done(run: dict) -> bool:
    return run["state"] not in ("queued", "running")


def test_sigkilled_server_leaves_the_run_going_and_the_history_intact(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    store = tmp_path / "store" / "runs.sqlite"
    nbformat.write(
        nb(
            ("import time", ["imports"]),
            ("x = 1", ["step:first"]),
            ("time.sleep(4)\ny = x + 1\nprint('slept', y)", ["step:slow"]),
            ("print('last', y * 2)", ["step:last"]),
        ),
        str(root / "long.ipynb"),
    )
    server = Server(tmp_path, root, store)
    try:
        quick = server.call("runs", body={"path": "long.ipynb", "cache": False})
        before = _wait(server, quick["id"], _done)
        assert before["state"] == "succeeded"
        long = server.call("runs", body={"path": "long.ipynb", "cache": False})
        running = _wait(
            server, long["id"], lambda r: r["steps"][1]["state"] == "running", timeout=120
        )
        runner = psutil.Process(_runner_pid(store, long["id"]))
        server.kill()  # SIGKILL: no shutdown hook runs
        assert runner.is_running() and runner.status() != psutil.STATUS_ZOMBIE
    finally:
        server.stop()
    server = Server(tmp_path, root, store)
    try:
        run = _wait(server, long["id"], _done)
        assert run["state"] == "succeeded", run
        assert run["started"] == running["started"]
        log = server.call("runs", long["id"], "steps", "last", "log")
        assert "last 4" in log["text"]
        listing = server.call("runs")
        assert [r["id"] for r in listing["runs"]] == [long["id"], quick["id"]]
        assert listing["runs"][1] == server.call("runs", quick["id"])
        assert listing["runs"][1]["steps"] == before["steps"]  # history intact
        # The event log kept the long run's whole story across the restart.
        from jupyter_pipeline.store import RunStore

        with RunStore(store) as s:
            story = [(e.kind, e.step, e.state) for e in s.events_after(0) if e.run_id == long["id"]]
        assert story[0] == ("run", None, "queued") and story[-1] == ("run", None, "succeeded")
        for step in ("first", "slow", "last"):
            assert story.index(("step", step, "running")) < story.index(("step", step, "succeeded"))
        merged = server.call("runs", long["id"], "notebook")
        assert "last 4" in json.dumps(merged["cells"][3]["outputs"])
    finally:
        server.stop()


def _runner_pid(store: Path, run_id: str) -> int:
    from jupyter_pipeline.store import RunStore

    with RunStore(store) as s:
        pid = s.get_run(run_id).pid
    assert pid
    return pid
