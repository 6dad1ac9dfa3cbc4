"""How fast is ``analyze``? In-process on a generated 1,000-cell notebook and on the examples,
and the CLI's cold start (``jupyter-pipeline analyze EXAMPLE --json`` in a fresh process).

Goals (issue "Core engine"): < 0.2 s in-process for 1,000 cells, < 1 s for the command.

Usage::

    python bench/analyze.py                 # the table
    python bench/analyze.py --profile 20    # plus the 20 hottest functions (cProfile)
    python bench/analyze.py --write-notebook /tmp/big.ipynb   # keep the generated notebook
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))
GOAL_1000 = 0.2
GOAL_CLI = 1.0


def _cell_source(i: int, rnd: random.Random, arrays: list[str], frames: list[str],
                 funcs: list[str]) -> str:  # fmt: skip
    """One realistic code cell; binds names later cells read."""
    a = rnd.choice(arrays) if arrays else "np.arange(10)"
    kind = i % 12
    if kind == 0:
        arrays.append(f"x{i}")
        return f"x{i} = np.arange({i % 50 + 5}) * {rnd.randint(1, 9)} + {a}.sum()"
    if kind == 1:
        frames.append(f"df{i}")
        return (
            f'df{i} = pd.DataFrame({{"a": {a}, "b": {a} * 2}})\n'
            f'df{i}["c"] = df{i}["a"] + df{i}["b"].shift(1).fillna(0)\n'
            f'summary{i} = df{i}.groupby("a").agg({{"b": "sum"}}).reset_index()\n'
            f"summary{i}.head()"
        )
    if kind == 2:
        funcs.append(f"f{i}")
        return (
            f"def f{i}(values, scale=2):\n"
            f'    """Scale and sum."""\n'
            f"    out = [v * scale for v in values if v > 0]\n"
            f"    return sum(out) + {a}.mean()"
        )
    if kind == 3:
        f = rnd.choice(funcs) if funcs else "sum"
        arrays.append(f"t{i}")
        return (
            f"total{i} = 0\n"
            f"for k in range(10):\n"
            f"    if k % 2:\n"
            f"        total{i} += k * {f}({a})\n"
            f"t{i} = np.array([total{i}] * 5)"
        )
    if kind == 4:
        d = rnd.choice(frames) if frames else "pd.DataFrame()"
        return f'{d}.fillna(0, inplace=True)\n{d}["d{i}"] = {d}["a"].apply(lambda v: v + 1)'
    if kind == 5:
        arrays.append(f"y{i}")
        return f"%time y{i} = {a} ** 2\n%matplotlib inline"
    if kind == 6:
        return f"results = {{}}\nresults['m{i}'] = float({a}.std())\nprint(results)"
    if kind == 7:
        d = rnd.choice(frames) if frames else "pd.DataFrame()"
        return (
            f"with open('report_{i}.txt', 'w') as fh{i}:\n"
            f"    fh{i}.write(str({d}.describe()))\n"
            f"names{i} = sorted({{c.upper() for c in {d}.columns}})"
        )
    if kind == 8:
        return f"class Model{i}:\n    def __init__(self, w):\n        self.w = w\n    def predict(self, x):\n        return x * self.w\nm{i} = Model{i}({a})"  # noqa: E501
    if kind == 9:
        return f"!echo cell {i}\nfiles{i} = !ls\nlen(files{i})"
    if kind == 10:
        arrays.append(f"z{i}")
        return f"try:\n    z{i} = {a} / {a}.max()\nexcept ZeroDivisionError as err:\n    z{i} = {a}"
    return f"import math\nangle{i} = math.pi / {i % 7 + 1}\nprint(f'{{angle{i}:.3f}}', {a}[:3])"


def generate(cells: int = 1000, steps: int = 100, seed: int = 0) -> nbformat.NotebookNode:
    """A notebook of ``cells`` cells: realistic code, some markdown, half the cells tagged.

    Cells come in ``steps`` blocks; the first half of each block is tagged ``step:sK`` (the
    rest are untagged and join the step above), a few blocks also carry ``prev:`` tags.
    """
    rnd = random.Random(seed)
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                               "language": "python"}})  # fmt: skip
    nb.cells.append(
        new_code_cell("import numpy as np\nimport pandas as pd", metadata={"tags": ["imports"]})
    )
    arrays: list[str] = []
    frames: list[str] = []
    funcs: list[str] = []
    per_step = max(1, -(-(cells - 1) // steps))  # ceil: exactly `steps` blocks
    for i in range(1, cells):
        block, pos = divmod(i - 1, per_step)
        if pos == per_step - 1 and block % 3 == 0:
            nb.cells.append(new_markdown_cell(f"## Section {block}\nSome text about it."))
            continue
        tags = []
        if pos < (per_step + 1) // 2:
            tags.append(f"step:s{block}")
            if pos == 0 and block and block % 4 == 0:
                tags.append(f"prev:s{block - 1}")
        cell = new_code_cell(_cell_source(i, rnd, arrays, frames, funcs))
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


def best_of(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(best wall time, best CPU time) of ``repeat`` calls of ``fn``.

    CPU time (this process plus finished children) is reported too: on a shared machine
    the wall time includes waiting for a core, the CPU time does not.
    """
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0 = _cpu()
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu0)
    return min(walls), min(cpus)


def _cpu() -> float:
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def cli_cold_start(notebook: Path, repeat: int = 5) -> tuple[float, float]:
    """Best wall and CPU time of ``jupyter-pipeline analyze NB --json`` in a new process."""
    exe = shutil.which("jupyter-pipeline", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyter-pipeline"
    )
    prog = [exe] if exe else [sys.executable, "-m", "jupyter_pipeline.cli"]
    cmd = [*prog, "analyze", str(notebook), "--json"]

    def once() -> None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return best_of(once, repeat)


def main(argv: list[str] | None = None) -> int:
    """Print the timing table (and a profile on request)."""
    parser = argparse.ArgumentParser(description="Time jupyter-pipeline analyze.")
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--profile", type=int, metavar="N", default=0, help="print the N hottest functions"
    )
    parser.add_argument("--write-notebook", type=Path, help="also save the generated notebook")
    args = parser.parse_args(argv)

    from jupyter_pipeline.analysis import analyze, analyze_notebook

    nb = generate(args.cells, args.steps)
    tmp = Path(tempfile.mkdtemp(prefix="jp-bench-analyze-"))
    big = args.write_notebook or tmp / f"generated_{args.cells}.ipynb"
    nbformat.write(nb, big)

    rows: list[tuple[str, float, float, str, str]] = []
    cpu0, start = _cpu(), time.perf_counter()
    pipeline = analyze_notebook(big)
    first, first_cpu = time.perf_counter() - start, _cpu() - cpu0
    n_code = sum(1 for c in nb.cells if c.cell_type == "code")
    label = f"{args.cells} cells ({n_code} code, {len(pipeline.steps)} steps)"
    rows.append((f"{label}: first call (imports IPython)", first, first_cpu, "", ""))
    b, m = best_of(lambda: analyze(nb, str(big)), args.repeat)
    rows.append((f"{label}: analyze(nb)", b, m, f"< {GOAL_1000} s", _ok(b, GOAL_1000)))
    b, m = best_of(lambda: analyze_notebook(big), args.repeat)
    rows.append((f"{label}: analyze_notebook(path)", b, m, f"< {GOAL_1000} s", _ok(b, GOAL_1000)))
    for ex in EXAMPLES:
        b, m = best_of(lambda ex=ex: analyze_notebook(ex), args.repeat)
        rows.append((f"example {ex.name}", b, m, "", ""))
    for ex in [*EXAMPLES[:1], big]:
        b, m = cli_cold_start(ex, args.repeat)
        name = ex.name if ex != big else big.name
        rows.append((f"CLI `analyze {name} --json` (new process)", b, m, f"< {GOAL_CLI} s",
                     _ok(b, GOAL_CLI)))  # fmt: skip
    b, c = best_of(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), 3)
    rows.append(("  (bare `python -c pass`, for scale)", b, c, "", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'wall':>8}  {'cpu':>8}  {'goal':>9}  ok (wall)")
    for what, best, cpu, goal, ok in rows:
        cpu_s = f"{cpu:8.3f}" if cpu else " " * 8
        print(f"{what:<{width}}  {best:8.3f}  {cpu_s}  {goal:>9}  {ok}")
    load = os.getloadavg()[0]
    print(f"(seconds, best of {args.repeat}; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {load:.1f} — wall times are only meaningful "
          "on an idle machine)")  # fmt: skip

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        analyze(nb, str(big))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())
    if not args.write_notebook:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _ok(value: float, goal: float) -> str:
    return "yes" if value < goal else f"NO ({value / goal:.1f}x goal)"


if __name__ == "__main__":
    sys.exit(main())
