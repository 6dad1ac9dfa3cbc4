"""Scale benchmarks: does the local runner keep up with the machine's cores?

One invocation prints every ratio, all measured in this process after a warm-up run:

(s1) CPU per trivial step in each process every step goes through: this (the runner)
     process, the kernel fork server and the step-driver server; the difference between
     a fan-out of 40 and one of 8 trivial steps, divided by 32 (fixed costs cancel).
     Baseline, same process: the runner with steps driven from its own threads
     (``step_processes=False``, the old way).                          (goal <= 10 ms each)
(s2) fan-out of N independent steps of ``--work`` seconds of CPU each, then a join, with
     ``max_parallel=N``: wall time of width N / wall time of width 1.  (goal <= 1.15 on a
     machine with at least N idle cores)
(s3) 64 trivial one-line steps: wall time per step, as a chain (each step reads the one
     before) and as a fan-out; baseline: the same 64 cells run straight with papermill.
                                                                       (goal <= 0.03 s a step)

Usage::

    python bench/scale.py                          # everything (widths 1,2,4,8,16)
    python bench/scale.py --widths 1,2 --work 1    # a 2-core machine
    python bench/scale.py --only s1 --profile      # where the runner's CPU goes
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import _WORK, _cell, _write, straight

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def fan_out(path: Path, width: int, loops: int) -> Path:
    """A source step, ``width`` independent compute steps reading it, and a join."""
    cells = [_cell(_WORK, "functions"), _cell("seed = 1", "step:src")]
    for k in range(width):
        cells.append(_cell(f"v{k} = work(seed + {k}, {loops})", f"step:w{k}"))
    total = " + ".join(f"v{k}" for k in range(width))
    cells.append(_cell(f"total = {total}\nprint(total)", "step:join"))
    return _write(path, cells)


def trivial_chain(path: Path, steps: int) -> Path:
    cells = [_cell("x0 = 0", "step:t0")]
    cells += [_cell(f"x{k} = x{k - 1} + 1", f"step:t{k}") for k in range(1, steps)]
    return _write(path, cells)


def trivial_fan(path: Path, steps: int) -> Path:
    return _write(path, [_cell(f"y{k} = {k}", f"step:t{k}") for k in range(steps)])


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of a live process so far; 0 if unreadable."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class _ServerCPU:
    """Reads the fork server's and step server's CPU time just before a run stops them."""

    def __init__(self) -> None:
        from jupyter_pipeline.runtime import forkserver, stepserver

        self.fork = 0.0
        self.step = 0.0
        fork_close = forkserver.ForkServer.close
        step_close = stepserver.StepServer.close
        outer = self

        def close_fork(server: Any) -> None:
            outer.fork = sum(
                _proc_cpu(getattr(z, "proc", None) and z.proc.pid) for z in server._zygotes
            )
            fork_close(server)

        def close_step(server: Any, *args: Any, **kw: Any) -> None:
            outer.step = _proc_cpu(server._proc.pid if server._proc else None)
            step_close(server, *args, **kw)

        forkserver.ForkServer.close = close_fork  # type: ignore[method-assign]
        stepserver.StepServer.close = close_step  # type: ignore[method-assign]


class Bench:
    def __init__(self, tmp: Path) -> None:
        from jupyter_pipeline.store import RunStore

        self.tmp = tmp
        self.store = RunStore(tmp / "store" / "runs.sqlite")
        self.servers = _ServerCPU()

    def run(self, nb: Path, runner: Any = None, **kw: Any) -> tuple[float, float, float, float]:
        """(wall, runner CPU, fork server CPU, step server CPU) of one uncached run.

        With ``runner`` whose step server is held (see :func:`held_server`), the step
        server's CPU is read before and after the run (it outlives the run).
        """
        from jupyter_pipeline.analysis import analyze_notebook
        from jupyter_pipeline.runners.local import LocalRunner

        pipeline = analyze_notebook(nb)
        events: list[str] = []  # as the CLI's progress display, which takes every event
        self.servers.fork = self.servers.step = 0.0
        held = getattr(runner, "_step_server", None)
        step_cpu = _proc_cpu(held._proc.pid) if held is not None else 0.0
        runner = runner or LocalRunner(self.store, cache=False, **kw)
        cpu, t = time.process_time(), time.perf_counter()
        run = runner.run(pipeline, nb, on_event=lambda e: events.append(e.kind))
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        if held is not None:
            self.servers.step = _proc_cpu(held._proc.pid) - step_cpu
        if run.state.value != "succeeded":
            bad = [f"{s.step}: {s.error}" for s in run.steps if s.state.value == "failed"]
            raise SystemExit(f"pipeline run of {nb.name} {run.state.value}: {bad}")
        return wall, cpu, self.servers.fork, self.servers.step


def calibrate(seconds: float) -> int:
    """Loop count of ``work`` that takes about ``seconds`` of CPU here."""
    scope: dict[str, Any] = {}
    exec(_WORK, scope)
    n = 200_000
    while True:
        t = time.process_time()
        scope["work"](1, n)
        dt = time.process_time() - t
        if dt > 0.2:
            return int(n * seconds / dt)
        n *= 4


def cpu_per_step(bench: Bench, profile: bool) -> list[tuple[str, str, str, bool]]:
    rows = []
    small = trivial_fan(bench.tmp / "fan8.ipynb", 8)
    big = trivial_fan(bench.tmp / "fan40.ipynb", 40)
    results = {}
    from jupyter_pipeline.runners.local import LocalRunner

    for label, processes in (("threads (baseline)", False), ("step processes", True)):
        runner = LocalRunner(bench.store, cache=False, step_processes=processes)
        # Steady state: the step server, once it has done its imports, serves every run
        # of its runner (on a busy machine the first steps of a run that starts it are
        # driven in the runner's threads while it imports).
        server = runner._acquire_step_server()
        while server is not None and not server.ready():
            time.sleep(0.05)
        try:
            a = bench.run(small, runner)
            b = bench.run(big, runner)
        finally:
            if server is not None:
                runner._release_step_server()
        per = [(y - x) / 32 * 1000 for x, y in zip(a[1:], b[1:], strict=True)]
        results[label] = per
        print(
            f"  {label}: runner {per[0]:.1f} ms, fork server {per[1]:.1f} ms, "
            f"step server {per[2]:.1f} ms a step; wall {(b[0] - a[0]) / 32 * 1000:.0f} ms a step",
            flush=True,
        )
    base, new = results["threads (baseline)"], results["step processes"]
    worst = max(new)
    rows.append(
        (
            "(s1) CPU per trivial step, runner / fork server / step server",
            f"threads: {base[0]:.1f} / {base[1]:.1f} ms; "
            f"runner {base[0] / max(new[0], 0.1):.1f}x less",
            f"{new[0]:.1f} / {new[1]:.1f} / {new[2]:.1f} ms  (goal <= 10 ms each)",
            worst <= 10,
        )
    )
    if profile:
        _profile(bench, big)
    return rows


def _profile(bench: Bench, nb: Path) -> None:
    """Where the runner process's CPU goes (every thread, CPU time), top functions."""
    profiles: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        prof = cProfile.Profile(time.thread_time)
        profiles.append(prof)
        prof.enable()
        try:
            original(self)
        finally:
            prof.disable()

    from jupyter_pipeline.runners.local import LocalRunner

    runner = LocalRunner(bench.store, cache=False)
    server = runner._acquire_step_server()  # steady state, as in (s1)
    while server is not None and not server.ready():
        time.sleep(0.05)
    threading.Thread.run = run  # type: ignore[method-assign]
    main = cProfile.Profile(time.thread_time)
    main.enable()
    try:
        bench.run(nb, runner)
    finally:
        main.disable()
        threading.Thread.run = original  # type: ignore[method-assign]
        if server is not None:
            runner._release_step_server()
    stats = pstats.Stats(main)
    for prof in profiles:
        stats.add(prof)
    print("\nrunner process, 40 trivial steps, CPU time by function (profiled, so inflated):")
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(15)


def fan_widths(bench: Bench, widths: list[int], seconds: float) -> list[tuple[str, str, str, bool]]:
    loops = calibrate(seconds)
    print(f"  one step: work(seed, {loops:,}) ~ {seconds:.1f} s of CPU", flush=True)
    walls: dict[int, float] = {}
    for width in widths:
        nb = fan_out(bench.tmp / f"width{width}.ipynb", width, loops)
        walls[width] = bench.run(nb, max_parallel=width)[0]
        print(f"  width {width}: {walls[width]:.2f} s", flush=True)
    base = walls[widths[0]]
    rows = []
    for width in widths[1:]:
        ratio = walls[width] / base
        rows.append(
            (
                f"(s2) fan-out width {width} / width {widths[0]}",
                f"{walls[width]:.2f}s vs {base:.2f}s, {os.cpu_count()} cpus",
                f"{ratio:.3f}  (goal <= 1.15)",
                ratio <= 1.15 or width > (os.cpu_count() or 1),
            )
        )
    return rows


def trivial(bench: Bench, steps: int, cli: bool) -> list[tuple[str, str, str, bool]]:
    import subprocess

    chain = trivial_chain(bench.tmp / f"chain{steps}.ipynb", steps)
    fan = trivial_fan(bench.tmp / f"fan{steps}.ipynb", steps)
    t = time.perf_counter()
    straight(chain, bench.tmp)
    t_straight = time.perf_counter() - t
    rows = []
    for label, nb in (("chain", chain), ("fan-out", fan)):
        wall = bench.run(nb)[0]
        per = wall / steps
        detail = (
            f"{wall:.2f}s in all; straight papermill {t_straight:.2f}s "
            f"({t_straight / steps:.3f}s a cell)"
        )
        if cli:
            env = {**os.environ, "JUPYTER_PIPELINE_STORE": str(bench.store.path)}
            cmd = [sys.executable, "-m", "jupyter_pipeline.cli", "run", str(nb), "--no-cache"]
            t = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            detail += f"; CLI command {time.perf_counter() - t:.2f}s"
        rows.append(
            (
                f"(s3) {steps} trivial steps, {label}: wall per step",
                detail,
                f"{per:.3f}s  (goal <= 0.03 s)",
                per <= 0.03,
            )
        )
        print("  ".join(rows[-1][:3]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="s1,s2,s3", help="comma-separated subset")
    parser.add_argument("--widths", default="1,2,4,8,16", help="fan-out widths for (s2)")
    parser.add_argument("--work", type=float, default=3.0, help="CPU seconds of one step (s2)")
    parser.add_argument("--trivial", type=int, default=64, help="steps for (s3)")
    parser.add_argument("--cli", action="store_true", help="(s3): also time the CLI command")
    parser.add_argument("--profile", action="store_true", help="(s1): profile the runner")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="jp-bench-scale-"))
    print(
        f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}  scratch: {tmp}  "
        f"load average: {os.getloadavg()[0]:.1f} (other work skews every ratio; rerun idle)"
    )
    bench = Bench(tmp)
    warm = trivial_fan(tmp / "warm.ipynb", 2)
    straight(warm, tmp)
    bench.run(warm)
    bench.run(warm, step_processes=False)
    rows: list[tuple[str, str, str, bool]] = []
    steps: list[tuple[str, Callable[[], list[tuple[str, str, str, bool]]]]] = [
        ("s1", lambda: cpu_per_step(bench, args.profile)),
        ("s2", lambda: fan_widths(bench, [int(w) for w in args.widths.split(",")], args.work)),
        ("s3", lambda: trivial(bench, args.trivial, args.cli)),
    ]
    for key, fn in steps:
        if key in only:
            rows += fn()
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    width = max(len(r[0]) for r in rows)
    for name, detail, value, ok in rows:
        print(f"{name:<{width}}  {value:<36} {'ok  ' if ok else 'MISS'}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
