"""Sweep benchmark: a 12-trial sweep against a loop of ``papermill -p`` runs of the same notebook.

The notebook: a parameters cell (``lr``, ``depth``), a shared step of about 3 s of CPU that
reads no parameter (the data loading and feature work every trial repeats in a papermill
loop), a small per-trial training step reading both parameters, and a metrics cell. The
sweep is 4 x 3 values; the baseline runs papermill once per trial with ``-p`` values, one
after another (what people write by hand), in this process after a warm-up run.

Prints the wall times, the ratio ``papermill loop / sweep`` (goal >= 4 on 2 cores) and how
often the shared step was computed (goal: once).

Usage::

    python bench/sweep.py                 # best of 1
    python bench/sweep.py --repeat 2      # best of 2, taking turns
    python bench/sweep.py --max-parallel 4
    python bench/sweep.py --fork-sharing  # sweeps only: a fork server per trial vs. one
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import _cell, _write, paired  # noqa: E402

LRS = [0.001, 0.01, 0.1, 1.0]
DEPTHS = [2, 4, 8]


def notebook(path: Path, work: int) -> Path:
    """The swept notebook; ``work`` sizes the shared step's loop (about 3 s by default)."""
    return _write(
        path,
        [
            _cell("import math", "imports"),
            _cell("lr = 0.1\ndepth = 4", "parameters"),
            _cell(
                # Shared: reads no parameter. Pure-Python CPU work, like parsing and features.
                f"acc = 0.0\nfor i in range({work}):\n    acc += (i % 7) * 0.5\n"
                "data = [math.sin(i) for i in range(2000)]",
                "step:load",
            ),
            _cell(
                "score = sum(abs(x) ** (1 + lr) for x in data[: 200 * depth])",
                "step:train",
            ),
            _cell("print(score)", "pipeline-metrics"),
        ],
    )


def papermill_loop(nb: Path, out_dir: Path) -> None:
    """One papermill run per trial, one after another."""
    import papermill

    for lr in LRS:
        for depth in DEPTHS:
            papermill.execute_notebook(
                str(nb),
                str(out_dir / f"pm-{lr}-{depth}.ipynb"),
                parameters={"lr": lr, "depth": depth},
                cwd=str(nb.parent),
                progress_bar=False,
                kernel_name="python3",
            )


class Sweeper:
    """Runs the sweep against a private store; remembers the last sweep."""

    def __init__(self, tmp: Path, max_parallel: int):
        from jupyter_pipeline.store import RunStore

        self.tmp = tmp
        self.max_parallel = max_parallel
        self.count = 0
        self.last = None
        self.store: RunStore | None = None

    def __call__(self, nb: Path) -> None:
        from jupyter_pipeline.analysis import analyze_notebook
        from jupyter_pipeline.runners.sweep import SweepRunner, plan_sweep
        from jupyter_pipeline.store import RunStore

        # A fresh store (and so a fresh step cache) each time: nothing comes from a prior run.
        self.count += 1
        self.store = RunStore(self.tmp / f"store-{self.count}" / "runs.sqlite")
        pipeline = analyze_notebook(nb)
        plan = plan_sweep(pipeline, {"lr": LRS, "depth": DEPTHS})
        sweep = SweepRunner(self.store, max_parallel=self.max_parallel).run(pipeline, nb, plan)
        if sweep.state.value != "succeeded":
            raise SystemExit(f"sweep {sweep.id} {sweep.state.value}: {sweep.error}")
        self.last = sweep


def calibrate(seconds: float) -> int:
    """Loop size of the shared step that takes about ``seconds`` of CPU here."""
    n = 2_000_000
    t = time.process_time()
    acc = 0.0
    for i in range(n):
        acc += (i % 7) * 0.5
    return int(n * seconds / max(time.process_time() - t, 1e-3))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="best of N per measurement")
    parser.add_argument("--max-parallel", type=int, default=None, help="sweep's trials at once")
    parser.add_argument("--shared", type=float, default=3.0, help="seconds of the shared step")
    parser.add_argument(
        "--fork-sharing",
        action="store_true",
        help="compare only sweeps: one fork server per trial against one for the sweep",
    )
    args = parser.parse_args(argv)
    if args.fork_sharing:
        return _fork_sharing(args)

    with tempfile.TemporaryDirectory(prefix="jp-bench-sweep-") as tmp_name:
        tmp = Path(tmp_name)
        work = calibrate(args.shared)
        nb = notebook(tmp / "sweep.ipynb", work)
        out = tmp / "out"
        out.mkdir()
        sweeper = Sweeper(tmp, args.max_parallel or os.cpu_count() or 1)
        # Warm-up: first imports (papermill, kernels, the runner) are paid by neither side.
        import papermill

        papermill.execute_notebook(
            str(nb), str(out / "warm.ipynb"), progress_bar=False, kernel_name="python3"
        )
        load_before = os.getloadavg()[0]
        cpu = time.process_time()
        loop, sweep = paired(args.repeat, lambda: papermill_loop(nb, out), lambda: sweeper(nb))
        cpu = time.process_time() - cpu
        assert sweeper.last is not None and sweeper.store is not None
        trials = sweeper.last.trials
        runs = [sweeper.store.get_run(t.run_id) for t in trials if t.run_id]
        shared = sum(
            1 for r in runs for s in r.steps if s.step == "load" and s.state.value == "succeeded"
        )
        load_step = next(s for r in runs for s in r.steps if s.step == "load" and s.finished)
        shared_s = (load_step.finished or 0) - (load_step.started or 0)

    print(f"cores: {os.cpu_count()}, load average before: {load_before:.1f}")
    print(f"shared step: {shared_s:.2f} s wall in the sweep; {len(trials)} trials")
    print(f"papermill -p loop, {len(trials)} runs:  {loop:7.2f} s")
    print(f"sweep (max_parallel={sweeper.max_parallel}):        {sweep:7.2f} s")
    print(f"ratio loop / sweep: {loop / sweep:.2f}   (goal >= 4 on 2 cores)")
    print(f"shared step computed: {shared} time(s)   (goal: 1)")
    print(f"this process's CPU while measuring: {cpu:.1f} s")
    return 0


def _fork_sharing(args: argparse.Namespace) -> int:
    """Sweeps only, taking turns: a fork server per trial vs. one for the whole sweep."""
    from jupyter_pipeline.runners.sweep import SweepRunner

    with tempfile.TemporaryDirectory(prefix="jp-bench-sweep-") as tmp_name:
        tmp = Path(tmp_name)
        nb = notebook(tmp / "sweep.ipynb", calibrate(args.shared))
        sweeper = Sweeper(tmp, args.max_parallel or os.cpu_count() or 1)

        def per_trial() -> None:
            SweepRunner.share_fork_server = False
            sweeper(nb)

        def shared() -> None:
            SweepRunner.share_fork_server = True
            sweeper(nb)

        shared()  # warm-up: first imports are paid by neither side
        load_before = os.getloadavg()[0]
        each, one = paired(args.repeat, per_trial, shared)
    print(f"cores: {os.cpu_count()}, load average before: {load_before:.1f}")
    print(f"sweep, a fork server per trial:   {each:7.2f} s")
    print(f"sweep, one fork server (sweep's): {one:7.2f} s")
    print(f"ratio per-trial / shared: {each / one:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
