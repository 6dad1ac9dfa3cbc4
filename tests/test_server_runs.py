"""Runs through the REST API against a real Jupyter server (pytest-jupyter) and real runs:
detached runner processes, papermill kernels, the shared run store and its event stream.

The KFP target is tested against tests/kfp_standin.py — the allowed stand-in, a local HTTP
server speaking the KFP v2beta1 REST API (no KFP cluster can run here).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest
from helpers import alive, cmdline, nb
from test_server_api import call

from jupyter_pipeline.store import RunStore
from tests.kfp_standin import KfpStandIn

pytestmark = pytest.mark.kernel


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store" / "runs.sqlite"


@pytest.fixture
def kfp_poll() -> float:
    return 0.2


@pytest.fixture
def kfp_cluster():
    with KfpStandIn() as standin:
        yield standin


@pytest.fixture
def jp_server_config(store_path, kfp_cluster, kfp_poll) -> dict:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_pipeline.server": True}},
        "PipelineApp": {
            "store_path": str(store_path),
            "max_parallel": 2,
            "kfp_host": kfp_cluster.url,
            "kfp_poll_interval": kfp_poll,
        },
    }


def _nb(second: str = "b = a + 1\nprint('b is', b)"):
    return nb(
        ("n = 1", ["pipeline-parameters"]),
        ("a = n * 10", ["step:first"]),
        (second, ["step:second"]),
    )


_SLOW = nb(
    ("import subprocess, time", ["imports"]),
    ("x = 1", ["step:first"]),
    ("child = subprocess.Popen(['sleep', '300'])\ntime.sleep(300)\ny = x", ["step:slow"]),
)


async def wait_run(jp_fetch, run_id: str, until=None, timeout: float = 180) -> dict:
    """Poll GET runs/{id} until it has finished (or ``until(run)`` holds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, run = await call(jp_fetch, "runs", run_id)
        assert status == 200, run
        if (until or (lambda r: r["state"] not in ("queued", "running")))(run):
            return run
        await asyncio.sleep(0.2)
    raise AssertionError(f"run {run_id} did not get there: {run}")


class Events:
    """An SSE subscriber on the real server (tornado's client, streamed)."""

    def __init__(self, jp_fetch, **params):
        self.messages: list[dict] = []
        self.ids: list[int] = []
        self.buffer = ""
        self.opened = False  # the server's opening comment arrived: subscribed
        self.task = asyncio.ensure_future(
            jp_fetch(
                "jupyter-pipeline",
                "events",
                params=params,
                streaming_callback=self._chunk,
                request_timeout=600,
                raise_error=False,
            )
        )

    def _chunk(self, data: bytes) -> None:
        self.opened = True
        self.buffer += data.decode()
        while "\n\n" in self.buffer:
            block, self.buffer = self.buffer.split("\n\n", 1)
            fields = dict(
                line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
            )
            if "data" in fields:
                self.messages.append(json.loads(fields["data"]))
                self.ids.append(int(fields["id"]))

    async def subscribed(self, timeout: float = 60) -> None:
        """Wait for the stream's opening comment: the server subscribed this client by then."""
        deadline = time.monotonic() + timeout
        while not self.opened:
            assert time.monotonic() < deadline, "the event stream never opened"
            await asyncio.sleep(0.05)

    async def until(self, predicate, timeout: float = 180) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.messages):
                return self.messages
            await asyncio.sleep(0.05)
        raise AssertionError(f"events never matched; got {self.messages}")

    def close(self) -> None:
        self.task.cancel()


def _finished(run_id: str):
    def check(messages):
        return any(
            m["run_id"] == run_id and m["kind"] == "run" and m["state"] == "succeeded"
            for m in messages
        )

    return check


async def test_run_to_succeeded_with_logs_notebooks_and_plan(jp_fetch, jp_root_dir):
    path = jp_root_dir / "work.ipynb"
    nbformat.write(_nb(), str(path))
    status, listing = await call(jp_fetch, "runs")
    assert status == 200 and listing["runs"] == []
    events = Events(jp_fetch, after=listing["cursor"])
    status, created = await call(
        jp_fetch, "runs", body={"path": "work.ipynb", "parameters": {"n": 2}}
    )
    assert status == 202, created
    assert created["state"] == "queued"
    run = await wait_run(jp_fetch, created["id"])
    assert run["state"] == "succeeded", run
    assert run["path"] == "work.ipynb" and run["backend"] == "local"
    assert run["parameters"] == {"n": 2}
    first, second = run["steps"]
    assert (first["name"], first["state"], first["attempts"]) == ("first", "succeeded", 1)
    assert first["outputs"]["a"]["type"] == "int" and first["outputs"]["a"]["size"] > 0
    assert second["started"] >= first["started"] and second["finished"] >= second["started"]
    assert run["has_merged_notebook"] and second["has_log"] and second["has_notebook"]
    # The event stream told the same story, in order, with the run's record attached.
    messages = await events.until(_finished(run["id"]))
    events.close()
    assert events.ids == sorted(events.ids)
    states = [(m["step"], m["state"]) for m in messages if m["kind"] == "step"]
    assert states.index(("first", "running")) < states.index(("first", "succeeded"))
    assert states.index(("first", "succeeded")) < states.index(("second", "running"))
    assert messages[-1]["run"]["state"] == "succeeded"
    # Log tailing with offsets.
    status, log = await call(jp_fetch, "runs", run["id"], "steps", "second", "log")
    assert status == 200 and "b is 21" in log["text"]
    assert log["offset"] == 0 and log["next_offset"] == log["size"] == len(log["text"].encode())
    assert log["finished"]
    status, tail = await call(
        jp_fetch, "runs", run["id"], "steps", "second", "log", params={"offset": 3}
    )
    assert tail["text"] == log["text"][3:] and tail["offset"] == 3
    status, end = await call(
        jp_fetch, "runs", run["id"], "steps", "second", "log", params={"offset": log["next_offset"]}
    )
    assert end["text"] == "" and end["next_offset"] == log["next_offset"]
    # Executed step notebook and merged notebook.
    status, step_nb = await call(jp_fetch, "runs", run["id"], "steps", "second", "notebook")
    assert status == 200 and "b is 21" in json.dumps(step_nb)
    status, merged = await call(jp_fetch, "runs", run["id"], "notebook")
    # As papermill records overrides: an injected-parameters cell after the parameters cell.
    assert status == 200 and len(merged["cells"]) == 4
    assert merged["cells"][1]["metadata"]["tags"] == ["injected-parameters"]
    assert merged["metadata"]["papermill"]["parameters"] == {"n": 2}
    assert "b is 21" in json.dumps(merged["cells"][3]["outputs"])
    # The plan now: cached; after an edit of the second step: it will run.
    body = {"path": "work.ipynb", "parameters": {"n": 2}}
    status, out = await call(jp_fetch, "analyze", body=body)
    assert [(p["action"], p["run"]) for p in out["plan"]] == [("cached", run["id"])] * 2
    nbformat.write(_nb("b = a + 5\nprint('b is', b)"), str(path))
    status, out = await call(jp_fetch, "analyze", body=body)
    assert [(p["action"], p["reason"]) for p in out["plan"]] == [
        ("cached", f"unchanged since run {run['id']}"),
        ("will run", "code changed"),
    ]
    # Re-run runs the recorded copy (the file has changed since) with the same parameters.
    status, again = await call(jp_fetch, "runs", body={"rerun": run["id"]})
    assert status == 202
    rerun = await wait_run(jp_fetch, again["id"])
    assert rerun["state"] == "succeeded" and rerun["parameters"] == {"n": 2}
    assert [s["state"] for s in rerun["steps"]] == ["cached", "cached"]
    status, merged = await call(jp_fetch, "runs", again["id"], "notebook")
    # The same overrides, recorded as papermill records them: as in the first run's notebook.
    assert merged["cells"][1]["metadata"]["tags"] == ["injected-parameters"]
    assert "b is 21" in json.dumps(merged["cells"][3]["outputs"])


async def test_runs_refuse_bad_input_and_unknown_ids(jp_fetch, jp_root_dir):
    bad = nb(("x = 1", ["step:a"]), ("print(y_typo)", ["step:b"]))
    nbformat.write(bad, str(jp_root_dir / "bad.ipynb"))
    status, out = await call(jp_fetch, "runs", body={"path": "bad.ipynb"})
    assert status == 400 and out["code"] == "invalid-notebook"
    assert "bad.ipynb" in out["message"] and "cell 1" in out["message"]
    assert out["details"]["diagnostics"][0]["code"] == "undefined-name"
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    status, out = await call(
        jp_fetch, "runs", body={"path": "work.ipynb", "parameters": {"n": "x"}}
    )
    assert status == 400 and "parameter n is int" in out["message"]
    status, out = await call(jp_fetch, "runs", body={"path": "work.ipynb", "target": "mars"})
    assert status == 400 and out["message"].startswith("target:")
    status, out = await call(jp_fetch, "runs", body={"rerun": "feedbeef"})
    assert status == 404
    for parts, method in [
        (("runs", "feedbeef"), "GET"),
        (("runs", "feedbeef"), "DELETE"),
        (("runs", "feedbeef", "notebook"), "GET"),
        (("runs", "feedbeef", "steps", "x", "log"), "GET"),
        (("runs", "feedbeef", "steps", "x", "notebook"), "GET"),
    ]:
        status, out = await call(jp_fetch, *parts, method=method)
        assert (status, out["code"]) == (404, "not-found"), parts
    status, listing = await call(jp_fetch, "runs")
    assert listing["runs"] == []  # nothing was recorded for refused runs


def _processes(store: RunStore, run_id: str) -> list[psutil.Process]:
    """The run's runner and its step kernels with all their children."""
    out = []
    run = store.get_run(run_id)
    pids = [run.pid] + [store.step_extra(run_id, s.step)["kernel_pid"] for s in run.steps]
    for pid in filter(None, pids):
        try:
            proc = psutil.Process(pid)
            out += [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return out


async def test_cancel_leaves_no_process_and_then_conflicts(jp_fetch, jp_root_dir, store_path):
    nbformat.write(_SLOW, str(jp_root_dir / "slow.ipynb"))
    status, created = await call(jp_fetch, "runs", body={"path": "slow.ipynb"})
    run_id = created["id"]
    store = RunStore(store_path)
    procs: list[psutil.Process] = []

    def sleeping(run) -> bool:
        # Wait until the slow step's kernel has spawned its `sleep` child.
        nonlocal procs
        procs = _processes(store, run_id)
        return any("sleep" in cmdline(p) for p in procs)

    await wait_run(jp_fetch, run_id, until=sleeping)
    assert len(procs) >= 3  # runner, kernel, sleep
    status, run = await call(jp_fetch, "runs", run_id, method="DELETE")
    assert status == 200, run
    assert run["state"] == "cancelled"
    assert [s["state"] for s in run["steps"]] == ["succeeded", "cancelled"]
    # Reading status() of a process that exits meanwhile raises: helpers.alive reads it safely.
    deadline = time.monotonic() + 30
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not [p for p in procs if alive(p)], procs
    status, out = await call(jp_fetch, "runs", run_id, method="DELETE")
    assert status == 409 and out["code"] == "conflict"
    assert "already cancelled" in out["message"]


async def test_cli_run_is_listed_and_streamed(jp_fetch, jp_root_dir, store_path):
    path = jp_root_dir / "work.ipynb"
    nbformat.write(_nb(), str(path))
    events = Events(jp_fetch)
    # Subscribed before the CLI starts (a fixed wait could end before a loaded server
    # answered, and the stream would then start past the run's first events).
    await events.subscribed()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "jupyter_pipeline.cli", "run", str(path), "--store", str(store_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(proc.wait(), 180) == 0
    _, listing = await call(jp_fetch, "runs", params={"notebook": "work.ipynb"})
    (run,) = listing["runs"]
    assert run["state"] == "succeeded" and run["path"] == "work.ipynb"
    messages = await events.until(_finished(run["id"]))
    events.close()
    assert messages[0]["kind"] == "run" and messages[0]["state"] == "queued"
    # A client that reconnects with the id of an event it saw gets exactly what followed.
    middle = len(events.ids) // 2
    resumed = Events(jp_fetch, after=events.ids[middle])
    await resumed.until(lambda m: len(m) >= len(events.ids) - middle - 1)
    await asyncio.sleep(0.3)
    resumed.close()
    assert resumed.ids == events.ids[middle + 1 :]
    # Paging: limit and before.
    _status, page = await call(jp_fetch, "runs", params={"limit": 1, "before": run["created"]})
    assert page["runs"] == [] and page["next_before"] is None


async def test_five_runs_at_once_all_finish_and_the_store_stays_consistent(
    jp_fetch, jp_root_dir, store_path
):
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    created = await asyncio.gather(
        *[
            call(jp_fetch, "runs", body={"path": "work.ipynb", "parameters": {"n": i}})
            for i in range(5)
        ]
    )
    ids = [c["id"] for status, c in created]
    assert all(status == 202 for status, _ in created) and len(set(ids)) == 5
    runs = [await wait_run(jp_fetch, run_id, timeout=300) for run_id in ids]
    assert [r["state"] for r in runs] == ["succeeded"] * 5
    assert sorted(r["parameters"]["n"] for r in runs) == list(range(5))
    for r in runs:
        _status, log = await call(jp_fetch, "runs", r["id"], "steps", "second", "log")
        assert f"b is {r['parameters']['n'] * 10 + 1}" in log["text"]
    store = RunStore(store_path)
    assert sorted(r.id for r in store.list_runs()) == sorted(ids)
    assert all(s.state.value == "succeeded" for r in store.list_runs() for s in r.steps)
    # Each run's event history ends with its success.
    last = {}
    for ev in store.events_after(0, 10_000):
        if ev.kind == "run":
            last[ev.run_id] = ev.state
    assert last == dict.fromkeys(ids, "succeeded")


async def test_kfp_target_submits_to_the_standin_and_follows_the_run(
    jp_fetch, jp_root_dir, kfp_cluster
):
    """Against tests/kfp_standin.py (a local HTTP server speaking the KFP REST API)."""
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    status, info = await call(jp_fetch, "info")
    assert "kfp" in info["targets"] and info["kfp_host"] == kfp_cluster.url
    body = {"path": "work.ipynb", "target": "kfp", "parameters": {"n": 3}}
    status, created = await call(jp_fetch, "runs", body=body)
    assert status == 202, created
    run = await wait_run(jp_fetch, created["id"])
    assert run["state"] == "succeeded" and run["backend"] == "kfp"
    assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
    (sent,) = kfp_cluster.sent("POST", "/apis/v2beta1/runs")
    assert sent["body"]["runtime_config"]["parameters"] == {"n": 3}
    assert run["url"] == f"{kfp_cluster.url}/#/runs/details/{next(iter(kfp_cluster.runs))}"
    # An unreachable cluster is a 400 with one line, not a 500.
    kfp_cluster.__exit__(None, None, None)
    status, out = await call(jp_fetch, "runs", body=body)
    assert status == 400 and "cannot reach KFP" in out["message"]


@pytest.mark.parametrize("kfp_poll", [30.0])
async def test_kfp_cancel_terminates_on_the_standin(jp_fetch, jp_root_dir, kfp_cluster):
    """Against tests/kfp_standin.py; the watcher polls rarely, so the run is still going."""
    nbformat.write(_nb(), str(jp_root_dir / "work.ipynb"))
    status, created = await call(jp_fetch, "runs", body={"path": "work.ipynb", "target": "kfp"})
    status, run = await call(jp_fetch, "runs", created["id"], method="DELETE")
    assert status == 200 and run["state"] == "cancelled", run
    external = next(iter(kfp_cluster.runs))
    assert kfp_cluster.sent("POST", f"/apis/v2beta1/runs/{external}:terminate")
    status, _out = await call(jp_fetch, "runs", created["id"], method="DELETE")
    assert status == 409
