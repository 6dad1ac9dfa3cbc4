"""How fast is the server API? A real ``jupyter server`` with the extension, over HTTP.

1. ``POST /jupyter-pipeline/analyze`` on a generated 200-cell notebook (20 steps): p50/p95
   over HTTP (keep-alive connection, token auth), against the baseline of the same work
   in this process (``analyze`` + ``plan_run``: what the handler calls). The ratio is the
   cost of HTTP, auth, JSON and the worker-thread hop.
2. Event delay: a client subscribed to ``/jupyter-pipeline/events`` while a 10-step
   notebook runs; for every step event, the time from the runner's store write (the
   event's ``time``) to the client receiving it. Baseline: a thread in this process tailing
   the same store's event log at the server's poll interval (no HTTP).

Goals (issue 7): analyze p95 < 100 ms; event delay p95 < 0.3 s.

Usage::

    python bench/api.py             # both
    python bench/api.py --rounds 50 # fewer analyze requests
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from analyze import generate

GOAL_ANALYZE_P95 = 0.100
GOAL_EVENT_P95 = 0.3
TOKEN = "bench-api-token"


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, root: Path, store: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
    }
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
            f"--port={port}", "--ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.jpserver_extensions={'jupyter_pipeline.server': True}",
            f"--PipelineApp.store_path={store}",
        ],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/jupyter-pipeline/info", headers=_headers())
            if conn.getresponse().status == 200:
                return proc, port
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("jupyter server did not start")


def _headers() -> dict[str, str]:
    return {"Authorization": f"token {TOKEN}", "Content-Type": "application/json"}


def bench_analyze(server: int, port: int, root: Path, store: Path, rounds: int) -> None:
    from jupyter_pipeline.analysis import analyze
    from jupyter_pipeline.runners.plan import plan_run
    from jupyter_pipeline.store import RunStore

    book = generate(cells=200, steps=20)
    path = root / "big.ipynb"
    nbformat.write(book, str(path))
    body = json.dumps({"path": "big.ipynb"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    import psutil

    server_proc = psutil.Process(server)
    over_http = []
    cpu_start = 0.0
    for i in range(rounds + 3):
        if i == 3:
            cpu_start = sum(server_proc.cpu_times()[:2])
        start = time.perf_counter()
        conn.request("POST", "/jupyter-pipeline/analyze", body=body, headers=_headers())
        resp = conn.getresponse()
        data = resp.read()
        if i >= 3:  # the first requests import and warm up the server's modules
            over_http.append(time.perf_counter() - start)
        assert resp.status == 200, data[:300]
    server_cpu = (sum(server_proc.cpu_times()[:2]) - cpu_start) / rounds
    out = json.loads(data)
    baseline = []
    baseline_cpu = []
    local = RunStore(store)
    for i in range(rounds + 3):
        start, cpu = time.perf_counter(), time.process_time()
        read = nbformat.read(str(path), as_version=4)
        pipeline = analyze(read, path="big.ipynb")
        plan_run(pipeline, read, path, local)
        if i >= 3:
            baseline.append(time.perf_counter() - start)
            baseline_cpu.append(time.process_time() - cpu)
    p50, p95 = pct(over_http, 0.5), pct(over_http, 0.95)
    b50, b95 = pct(baseline, 0.5), pct(baseline, 0.95)
    print(f"POST analyze, 200 cells / {len(out['pipeline']['steps'])} steps, {rounds} requests:")
    print(f"  over HTTP      p50 {p50 * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")
    print(f"  in-process     p50 {b50 * 1000:6.1f} ms   p95 {b95 * 1000:6.1f} ms")
    mean_cpu = sum(baseline_cpu) / len(baseline_cpu)
    print(
        f"  CPU per request: server {server_cpu * 1000:.1f} ms, in-process "
        f"{mean_cpu * 1000:.1f} ms (wall times above include waiting for a core)"
    )
    print(
        f"  ratio HTTP / in-process: p50 {p50 / b50:.2f}x, p95 {p95 / b95:.2f}x; "
        f"goal p95 < {GOAL_ANALYZE_P95 * 1000:.0f} ms: "
        + ("ok" if p95 < GOAL_ANALYZE_P95 else "MISSED")
    )


def _chain(steps: int) -> nbformat.NotebookNode:
    cells = [new_code_cell("x0 = 0")]
    cells[0].metadata["tags"] = ["step:s0"]
    for i in range(1, steps):
        cell = new_code_cell(f"x{i} = x{i - 1} + 1")
        cell.metadata["tags"] = [f"step:s{i}"]
        cells.append(cell)
    return new_notebook(
        cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )


def bench_events(port: int, root: Path, store: Path, runs: int) -> None:
    from jupyter_pipeline.store import RunStore

    nbformat.write(_chain(10), str(root / "chain.ipynb"))
    received: list[tuple[float, dict]] = []
    tailed: list[tuple[float, float]] = []
    stop = threading.Event()

    def subscribe() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("GET", "/jupyter-pipeline/events", headers=_headers())
        resp = conn.getresponse()
        while not stop.is_set():
            line = resp.readline()
            if not line:
                return
            if line.startswith(b"data: "):
                received.append((time.time(), json.loads(line[6:])))

    def tail() -> None:  # the baseline: this process reading the event log directly
        local = RunStore(store)
        cursor = local.last_event()
        while not stop.is_set():
            for ev in local.events_after(cursor):
                cursor = ev.seq
                if ev.kind == "step":
                    tailed.append((time.time(), ev.time))
            time.sleep(0.1)  # the server's default event_poll_interval

    threads = [threading.Thread(target=f, daemon=True) for f in (subscribe, tail)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(runs):
        conn.request(
            "POST",
            "/jupyter-pipeline/runs",
            body=json.dumps({"path": "chain.ipynb", "cache": False}),
            headers=_headers(),
        )
        run_id = json.loads(conn.getresponse().read())["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if any(
                m["run_id"] == run_id and m["kind"] == "run" and m["state"] == "succeeded"
                for _, m in received
            ):
                break
            time.sleep(0.1)
    time.sleep(0.5)
    stop.set()
    delays = [at - m["time"] for at, m in received if m["kind"] == "step"]
    base = [at - t for at, t in tailed]
    p50, p95 = pct(delays, 0.5), pct(delays, 0.95)
    b50, b95 = pct(base, 0.5), pct(base, 0.95)
    print(f"event delay, store write -> client, {len(delays)} step events over {runs} runs:")
    print(f"  SSE client      p50 {p50 * 1000:6.1f} ms   p95 {p95 * 1000:6.1f} ms")
    print(f"  direct tail     p50 {b50 * 1000:6.1f} ms   p95 {b95 * 1000:6.1f} ms")
    print(
        f"  ratio SSE / direct tail: p50 {p50 / b50:.2f}x, p95 {p95 / b95:.2f}x; "
        f"goal p95 < {GOAL_EVENT_P95:.1f} s: {'ok' if p95 < GOAL_EVENT_P95 else 'MISSED'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100, help="analyze requests")
    parser.add_argument("--runs", type=int, default=3, help="runs of the 10-step notebook")
    args = parser.parse_args(argv)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"load average {load:.1f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="jp-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        root = tmp / "root"
        root.mkdir()
        store = tmp / "store" / "runs.sqlite"
        proc, port = start_server(tmp, root, store)
        try:
            bench_analyze(proc.pid, port, root, store, args.rounds)
            bench_events(port, root, store, args.runs)
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
