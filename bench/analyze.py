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


def _cell_source(
    i: int, rnd: random.Random, arrays: list[str], frames: list[str], funcs: list[str]
) -> str:
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
        return (
            f"class Model{i}:\n"
            f"    def __init__(self, w):\n"
            f"        self.w = w\n"
            f"    def predict(self, x):\n"
            f"        return x * self.w\n"
            f"m{i} = Model{i}({a})"
        )
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
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb = new_notebook(metadata={"kernelspec": kernelspec})
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


def cli_command(notebook: Path | None):  # type: ignore[no-untyped-def]
    """A function running ``jupyter-pipeline analyze NB --json`` in a new process
    (``python -c pass`` when ``notebook`` is None)."""
    exe = shutil.which("jupyter-pipeline", path=str(Path(sys.executable).parent)) or shutil.which(
        "jupyter-pipeline"
    )
    prog = [exe] if exe else [sys.executable, "-m", "jupyter_pipeline.cli"]
    cmd = (
        [*prog, "analyze", str(notebook), "--json"] if notebook else [sys.executable, "-c", "pass"]
    )

    def once() -> None:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    return once


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

    def timed(what: str, fn, goal: float | None = None) -> None:  # type: ignore[no-untyped-def]
        wall, cpu = best_of(fn, args.repeat)
        rows.append((what, wall, cpu, f"< {goal} s" if goal else "", _ok(wall, goal)))

    # Cold: the per-cell memo (jupyter_pipeline.analysis.memo) emptied before each call.
    timed(f"{label}: analyze(nb), cold", lambda: cold(analyze, nb, str(big)), GOAL_1000)
    timed(f"{label}: analyze_notebook(path), cold", lambda: cold(analyze_notebook, big), GOAL_1000)
    # Warm: the memo holds the notebook; each call edits one more cell (what an editor
    # sends), so only that cell is parsed and scoped again.
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    edits = iter(range(10**6))

    def edited() -> None:
        k = next(edits)
        code_cells[(k * 37) % len(code_cells)].source += f"\nedit_{k} = {k}"
        analyze(nb, str(big))

    analyze(nb, str(big))
    timed(f"{label}: analyze(nb), one cell edited, memo warm", edited)
    nb = generate(args.cells, args.steps)  # (unedited again)
    for ex in EXAMPLES:
        timed(f"example {ex.name}, cold", lambda ex=ex: cold(analyze_notebook, ex))
    for ex in [*EXAMPLES[:1], big]:
        timed(f"CLI `analyze {ex.name} --json` (new process)", cli_command(ex), GOAL_CLI)
    timed("  (bare `python -c pass`, for scale)", cli_command(None))

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'wall':>8}  {'cpu':>8}  {'goal':>9}  ok (wall)")
    for what, wall, cpu, goal, ok in rows:
        print(f"{what:<{width}}  {wall:8.3f}  {cpu:8.3f}  {goal:>9}  {ok}")
    print(
        f"(seconds, best of {args.repeat}; python {sys.version.split()[0]}, {os.cpu_count()} "
        f"CPUs, load average {os.getloadavg()[0]:.1f}; cpu = user+sys of this process and its "
        "children — on a busy machine trust it over wall)"
    )

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        cold(analyze, nb, str(big))
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue())
    if not args.write_notebook:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def cold(fn, *args):  # type: ignore[no-untyped-def]
    """``fn(*args)`` with the per-cell analysis memo emptied first."""
    from jupyter_pipeline.analysis.memo import clear_memo

    clear_memo()
    return fn(*args)


def _ok(value: float, goal: float | None) -> str:
    if goal is None:
        return ""
    return "yes" if value < goal else f"NO ({value / goal:.1f}x goal)"


if __name__ == "__main__":
    sys.exit(main())
