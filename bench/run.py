"""Local-run benchmarks: the LocalRunner against a straight papermill run of the same notebook.

One invocation prints every ratio (all in this process, after a warm-up run so neither side
pays first-import costs):

(a) 5-step compute-bound chain: pipeline time / straight time          (goal <= 1.15)
(b) 10-step trivial chain: (pipeline - straight) / 10, the per-step
    overhead beyond the one kernel start a straight run also pays       (goal <= 0.15 s)
    (b') the same without pre-warming: (pipeline - 10 kernel starts) / 10, what a step
    costs beyond its own kernel start
(c) two equal independent compute-bound branches: time with
    max_parallel=1 / time with max_parallel=2                            (goal >= 1.8)
(d) cached re-run of the 10-step notebook: LocalRunner.run wall time    (goal < 1 s)
    (and the whole ``jupyter-pipeline run`` command, cold interpreter, for information)
(f) a real scikit-learn notebook from tests/data/corpus split one step
    per code cell: pipeline time / straight time                         (goal <= 1.5)

(e), serializer throughput, is ``bench/serializers.py``.

Usage::

    python bench/run.py                 # everything, best of 1
    python bench/run.py --repeat 3      # best of 3 per measurement
    python bench/run.py --only a,b      # some of them
    python bench/run.py --no-fork       # step kernels spawned, not forked from a fork server
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"
SKLEARN_NB = CORPUS / "sklearn__linear_model__plot_lasso_and_elasticnet.ipynb"


def _cell(source: str, *tags: str):
    cell = new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _write(path: Path, cells) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nbformat.write(nb, str(path))
    return path


# Pure-Python work: single-threaded, so "compute-bound" means one core per step.
_WORK = """def work(seed, n):
    acc = seed
    for i in range(n):
        acc = (acc * 31 + i) % 1_000_003
    return acc"""


def compute_chain(path: Path, n: int) -> Path:
    cells = [_cell(_WORK, "functions"), _cell(f"v0 = work(1, {n})\nprint(v0)", "step:s0")]
    for k in range(1, 5):
        cells.append(_cell(f"v{k} = work(v{k - 1}, {n})\nprint(v{k})", f"step:s{k}"))
    return _write(path, cells)


def trivial_chain(path: Path, steps: int = 10) -> Path:
    cells = [_cell("x0 = 0\nprint(x0)", "step:t0")]
    for k in range(1, steps):
        cells.append(_cell(f"x{k} = x{k - 1} + 1\nprint(x{k})", f"step:t{k}"))
    return _write(path, cells)


def branches(path: Path, n: int) -> Path:
    return _write(
        path,
        [
            _cell(_WORK, "functions"),
            _cell(f"left = work(1, {n})\nprint(left)", "step:left"),
            _cell(f"right = work(2, {n})\nprint(right)", "step:right"),
        ],
    )


# ---------------------------------------------------------------------------- timing


def paired(repeat: int, *fns: Callable[[], object]) -> list[float]:
    """Best of ``repeat`` for each function, taking turns, so load changes hit all alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return [min(t) for t in times]


def best(repeat: int, fn: Callable[[], object]) -> float:
    """Best of ``repeat`` calls of ``fn``."""
    return paired(repeat, fn)[0]


def straight(nb: Path, out_dir: Path) -> None:
    import papermill

    papermill.execute_notebook(
        str(nb),
        str(out_dir / f"straight-{nb.name}"),
        cwd=str(nb.parent),
        progress_bar=False,
        kernel_name="python3",
    )


class Pipe:
    """Runs notebooks as pipelines against a private store."""

    def __init__(self, tmp: Path, fork: bool = True):
        from jupyter_pipeline.store import RunStore

        self.store = RunStore(tmp / "store" / "runs.sqlite")
        self.fork = fork

    def run(self, nb: Path, *, split: str = "tags", cache: bool = False, **kw) -> object:
        from jupyter_pipeline.analysis import analyze_notebook
        from jupyter_pipeline.runners.local import LocalRunner

        pipeline = analyze_notebook(nb, split=split)
        run = LocalRunner(self.store, cache=cache, fork=self.fork, **kw).run(pipeline, nb)
        if run.state.value != "succeeded":
            bad = [f"{s.step}: {s.error}" for s in run.steps if s.state.value == "failed"]
            raise SystemExit(f"pipeline run of {nb.name} {run.state.value}: {bad}")
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=1, help="best of N per measurement")
    parser.add_argument("--only", default="a,b,c,d,f", help="comma-separated subset")
    parser.add_argument("--work", type=int, default=20_000_000, help="loop size of one step (~2 s)")
    parser.add_argument("--notebook", type=Path, default=SKLEARN_NB, help="notebook for (f)")
    parser.add_argument(
        "--no-fork", action="store_true", help="spawn step kernels (no fork server)"
    )
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="jp-bench-run-"))
    pipe = Pipe(tmp, fork=not args.no_fork)
    rows: list[tuple[str, str, str, bool]] = []
    print(
        f"cpus: {os.cpu_count()}  python: {sys.version.split()[0]}  scratch: {tmp}  "
        f"load average: {os.getloadavg()[0]:.1f} (other work skews every ratio; rerun idle)  "
        f"step kernels: {'spawned' if args.no_fork else 'forked from a fork server'}"
    )

    # Warm-up: imports of papermill, nbclient, the analysis, the runtime in this process.
    warm = trivial_chain(tmp / "warm.ipynb", steps=2)
    straight(warm, tmp)
    pipe.run(warm)

    if "a" in only:
        nb = compute_chain(tmp / "compute.ipynb", args.work)
        t_straight, t_pipe = paired(args.repeat, lambda: straight(nb, tmp), lambda: pipe.run(nb))
        ratio = t_pipe / t_straight
        rows.append(
            (
                "(a) 5-step compute-bound chain",
                f"{t_pipe:.2f}s / {t_straight:.2f}s straight",
                f"{ratio:.3f}  (goal <= 1.15)",
                ratio <= 1.15,
            )
        )
        print("  ".join(rows[-1][:3]), flush=True)

    if "b" in only or "d" in only:
        nb = trivial_chain(tmp / "trivial.ipynb")
        if "b" in only:
            # One kernel start as papermill pays it: a straight run of a one-cell notebook.
            one = _write(tmp / "one.ipynb", [_cell("x = 0")])
            t_straight, t_pipe, t_kernel, t_cold = paired(
                args.repeat,
                lambda: straight(nb, tmp),
                lambda: pipe.run(nb),
                lambda: straight(one, tmp),
                lambda: pipe.run(nb, prewarm=False),
            )
            per_step = (t_pipe - t_straight) / 10
            beyond = (t_cold - 10 * t_kernel) / 10
            rows.append(
                (
                    "(b) 10-step trivial chain, overhead per step",
                    f"{t_pipe:.2f}s vs {t_straight:.2f}s straight",
                    f"{per_step:.3f}s  (goal <= 0.15 s)",
                    per_step <= 0.15,
                )
            )
            print("  ".join(rows[-1][:3]), flush=True)
            rows.append(
                (
                    "(b') same, no pre-warming: per step beyond one kernel start",
                    f"{t_cold:.2f}s for 10 steps; one papermill kernel start {t_kernel:.2f}s",
                    f"{beyond:.3f}s  (goal <= 0.15 s)",
                    beyond <= 0.15,
                )
            )
            print("  ".join(rows[-1][:3]), flush=True)
        if "d" in only:
            pipe.run(nb, cache=True)  # fill the cache
            t_cached = best(args.repeat, lambda: pipe.run(nb, cache=True))
            run = pipe.run(nb, cache=True)
            assert all(s.state.value == "cached" for s in run.steps), "not all steps cached"
            env = {**os.environ, "JUPYTER_PIPELINE_STORE": str(pipe.store.path)}
            cmd = [sys.executable, "-m", "jupyter_pipeline.cli", "run", str(nb)]
            cmd += ["--no-fork"] if args.no_fork else []
            t_cli = best(
                args.repeat,
                lambda: subprocess.run(cmd, env=env, check=True, capture_output=True),
            )
            rows.append(
                (
                    "(d) cached re-run, 10 steps",
                    f"CLI command end to end: {t_cli:.2f}s",
                    f"{t_cached:.3f}s  (goal < 1 s)",
                    t_cached < 1,
                )
            )
            print("  ".join(rows[-1][:3]), flush=True)

    if "c" in only:
        # Branches long against a kernel start (~1 s), as pipelines worth parallelizing are.
        nb = branches(tmp / "branches.ipynb", args.work * 8)
        t_seq, t_par = paired(
            args.repeat,
            lambda: pipe.run(nb, max_parallel=1),
            lambda: pipe.run(nb, max_parallel=2),
        )
        speedup = t_seq / t_par
        rows.append(
            (
                "(c) two independent branches",
                f"{t_par:.2f}s parallel vs {t_seq:.2f}s in sequence",
                f"{speedup:.2f}x  (goal >= 1.8x)",
                speedup >= 1.8,
            )
        )
        print("  ".join(rows[-1][:3]), flush=True)

    if "f" in only:
        nb = args.notebook
        pipeline_probe = __import__("jupyter_pipeline.analysis", fromlist=["_"]).analyze_notebook(
            nb, split="cells"
        )
        t_straight, t_pipe = paired(
            args.repeat, lambda: straight(nb, tmp), lambda: pipe.run(nb, split="cells")
        )
        ratio = t_pipe / t_straight
        rows.append(
            (
                f"(f) {nb.name}, {len(pipeline_probe.steps)} steps (one per code cell)",
                f"{t_pipe:.2f}s / {t_straight:.2f}s straight",
                f"{ratio:.3f}  (goal <= 1.5)",
                ratio <= 1.5,
            )
        )
        print("  ".join(rows[-1][:3]), flush=True)

    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    width = max(len(r[0]) for r in rows)
    for name, detail, value, ok in rows:
        print(f"{name:<{width}}  {value:<26} {'ok  ' if ok else 'MISS'}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
