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


def _edited(book: nbformat.NotebookNode, i: int) -> dict:
    """The notebook with one cell edited (as the sidebar sends unsaved content)."""
    data = json.loads(nbformat.writes(book))
    cell = data["cells"][(i * 7) % len(data["cells"])]
    if cell["cell_type"] == "code":
        cell["source"] = f"{''.join(cell['source'])}\n# edit {i}"
    return data


def _report(label: str, wall: list[float], base: list[float], goal: float | None) -> None:
    p50, p95 = pct(wall, 0.5), pct(wall, 0.95)
    b50, b95 = pct(base, 0.5), pct(base, 0.95)
    print(f"  {label}")
    print(f"    over HTTP      p50 {p50 * 1000:7.1f} ms   p95 {p95 * 1000:7.1f} ms")
    print(f"    in-process     p50 {b50 * 1000:7.1f} ms   p95 {b95 * 1000:7.1f} ms")
    verdict = ""
    if goal is not None:
        verdict = f"; goal p95 < {goal * 1000:.0f} ms: " + ("ok" if p95 < goal else "MISSED")
    print(f"    ratio HTTP / in-process: p50 {p50 / b50:.2f}x, p95 {p95 / b95:.2f}x{verdict}")


def _cpu(server: float, local: float) -> None:
    print(f"    CPU per request: server {server * 1000:.1f} ms, in-process {local * 1000:.1f} ms")


def bench_analyze(server: int, port: int, root: Path, store: Path, rounds: int) -> None:
    import psutil

    from jupyter_pipeline.analysis import analyze
    from jupyter_pipeline.runners.plan import plan_run
    from jupyter_pipeline.store import RunStore

    book = generate(cells=200, steps=20)
    path = root / "big.ipynb"
    nbformat.write(book, str(path))
    server_proc = psutil.Process(server)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    local = RunStore(store)

    def over_http(body_of) -> tuple[list[float], float]:
        times, cpu_start = [], 0.0
        for i in range(rounds + 3):
            if i == 3:  # the first requests import and warm up the server's modules
                cpu_start = sum(server_proc.cpu_times()[:2])
            body = json.dumps(body_of(i))
            start = time.perf_counter()
            conn.request("POST", "/jupyter-pipeline/analyze", body=body, headers=_headers())
            resp = conn.getresponse()
            data = resp.read()
            if i >= 3:
                times.append(time.perf_counter() - start)
            assert resp.status == 200, data[:300]
        return times, (sum(server_proc.cpu_times()[:2]) - cpu_start) / rounds

    def in_process(nb_of) -> tuple[list[float], float]:
        times, cpu = [], 0.0
        for i in range(rounds + 3):
            start, c0 = time.perf_counter(), time.process_time()
            read = nb_of(i)
            pipeline = analyze(read, path="big.ipynb")
            plan_run(pipeline, read, path, local)
            if i >= 3:
                times.append(time.perf_counter() - start)
                cpu += time.process_time() - c0
        return times, cpu / rounds

    print(f"POST analyze, 200 cells / 20 steps, {rounds} requests each:")
    edited_http, edited_cpu = over_http(
        lambda i: {"path": "big.ipynb", "notebook": _edited(book, i)}
    )
    edited_base, edited_base_cpu = in_process(lambda i: nbformat.from_dict(_edited(book, i)))
    _report(
        "after an edit (unsaved content, one cell changed per request)",
        edited_http,
        edited_base,
        GOAL_ANALYZE_P95,
    )
    _cpu(edited_cpu, edited_base_cpu)
    same_http, same_cpu = over_http(lambda i: {"path": "big.ipynb"})
    same_base, same_base_cpu = in_process(lambda i: nbformat.read(str(path), as_version=4))
    _report(
        "unchanged file (the server's analysis memo hits; in-process re-analyzes)",
        same_http,
        same_base,
        GOAL_ANALYZE_P95,
    )
    _cpu(same_cpu, same_base_cpu)


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
