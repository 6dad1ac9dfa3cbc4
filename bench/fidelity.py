"""The fidelity measure (../shared/README.md): finest split vs. a straight run.

For each corpus notebook (default: every ``tests/data/corpus/*.ipynb``):

1. analyze it with ``split="cells"`` — every code cell its own step, role-tagged cells keep
   their role;
2. run it straight through with papermill ``--runs`` times (default 3; cwd = the notebook's
   folder) to learn which outputs are stable;
3. run it as a pipeline with :class:`~jupyter_pipeline.runners.local.LocalRunner` (no cache)
   and merge the steps' outputs back into the cells;
4. compare every stable cell: text outputs (stdout, results, errors) and image
   fingerprints (PNG, JPEG, SVG: ``runners.verify.image_fingerprints``) must be equal.

Normalized before comparing, because they differ between *any* two runs: execution counts
(never compared), memory addresses in reprs (``at 0x7f…``) and the numbers of IPython's
timing lines (``CPU times: …``, ``Wall time: …``, ``%timeit`` results). Beyond that, the
straight runs decide: numbers that differ between them (a hand-made ``fit done in 0.002s``,
an unseeded draw) are masked, the rest of their line still compared (and that cell's
spacing loosened: a varying number re-aligns a table); a cell whose text differs in any
other way is not compared (nor are images that differ between them).
Every mask is reported. stderr (warnings) is compared too, but reported apart: a warning
shown once per process legitimately appears again in a fresh kernel.

Usage::

    python bench/fidelity.py                       # all corpus notebooks
    python bench/fidelity.py tests/data/corpus/kale__iris.ipynb --runs 3 --keep /tmp/fid
    python bench/fidelity.py --json results.json   # machine-readable results too
    python bench/fidelity.py --keep /tmp/fid --reuse  # re-compare without running again
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "corpus"

# IPython's own timing output: its numbers change on every run, its shape does not.
_TIMING = [
    (re.compile(r"(CPU times: user )[^\n]*"), r"\1…"),
    (re.compile(r"(Wall time: )[^\n]*"), r"\1…"),
    (
        re.compile(
            r"[\d.]+ [nµum]?s ± [\d.]+ [nµum]?s per loop \(mean ± std\. dev\. of \d+ runs?, "
            r"[\d,]+ loops? each\)"
        ),
        "… per loop",
    ),
]


def normalize(text: str) -> str:
    """Mask what legitimately differs between any two runs (timing numbers).

    Memory addresses are already masked by :func:`jupyter_pipeline.runners.verify.text_outputs`.
    """
    for pattern, repl in _TIMING:
        text = pattern.sub(repl, text)
    return text


def cell_outputs(cell: dict[str, Any]) -> dict[str, list[str]]:
    """The comparable outputs of one executed code cell.

    Returns:
        ``text`` (stdout, results, errors — addresses and timings masked), ``stderr`` and
        ``images`` (one fingerprint per image, in display order: see
        :func:`jupyter_pipeline.runners.verify.image_fingerprints`).
    """
    from jupyter_pipeline.runners.verify import image_fingerprints, text_outputs

    outputs = [normalize(t) for t in text_outputs(cell, stderr=True, images=False)]
    text = [t for t in outputs if not t.startswith("[stderr]")]
    stderr = [t for t in outputs if t.startswith("[stderr]")]
    images = [fp for o in cell.get("outputs", []) for fp in image_fingerprints(o.get("data") or {})]
    return {"text": text, "stderr": stderr, "images": images}


_NUMBER = re.compile(r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_SPACES = re.compile(r"[ \t]+")


def _lines(text: list[str]) -> list[str]:
    return "\n".join(text).split("\n")


def _tokens(line: str) -> list[str]:
    """Text and numbers alternately (text first), runs of spaces collapsed in the text."""
    parts = _NUMBER.split(line)
    return [p if k % 2 else _SPACES.sub(" ", p) for k, p in enumerate(parts)]


Expected = list[str | list[str | None]]  # per line: exact text, or tokens (None = any number)


def text_expectation(runs: list[list[str]]) -> Expected | None:
    """What a cell's text must be, learned from its straight runs.

    Lines equal in every run must match exactly. In a line that differs between the runs
    *only in some of its numbers* (``fit done in 0.002s``, an unseeded draw) those numbers
    may be anything — the straight runs themselves show they are not reproducible; the
    rest of the line must match, and the other lines of such a cell are compared with runs
    of spaces collapsed, since a varying number can re-align a printed table. Anything else
    that differs makes the text not comparable.

    Returns:
        Per line, the exact text or its tokens with None for a varying number; or None.
    """
    split = [_lines(r) for r in runs]
    if any(len(x) != len(split[0]) for x in split):
        return None
    out: Expected = []
    for variants in zip(*split, strict=True):
        if all(v == variants[0] for v in variants):
            out.append(variants[0])
            continue
        tokens = [_tokens(v) for v in variants]
        if any(len(t) != len(tokens[0]) for t in tokens):
            return None
        line: list[str | None] = []
        for k, column in enumerate(zip(*tokens, strict=True)):
            if all(c == column[0] for c in column):
                line.append(column[0])
            elif k % 2:  # a number that varies
                line.append(None)
            else:
                return None
        out.append(line)
    if any(isinstance(x, list) for x in out):
        out = [x if isinstance(x, list) else _tokens(x) for x in out]
    return out


def masked_numbers(expected: Expected) -> int:
    """How many numbers :func:`text_expectation` leaves free."""
    return sum(x.count(None) for x in expected if isinstance(x, list))


def text_matches(expected: Expected, text: list[str]) -> bool:
    """Whether a cell's text outputs meet :func:`text_expectation`."""
    lines = _lines(text)
    if len(lines) != len(expected):
        return False
    for want, got in zip(expected, lines, strict=True):
        if isinstance(want, str):
            if got != want:
                return False
            continue
        tokens = _tokens(got)
        if len(tokens) != len(want) or any(
            w is not None and w != t for w, t in zip(want, tokens, strict=True)
        ):
            return False
    return True


@dataclass
class CellResult:
    """Comparison of one code cell."""

    cell: int
    step: str
    stable: bool
    equal: bool | None = None  # None when not compared (unstable)
    stderr_equal: bool | None = None
    diff: str = ""


@dataclass
class NotebookResult:
    """Fidelity of one notebook."""

    notebook: str
    steps: int = 0
    code_cells: int = 0
    compared: int = 0
    equal: int = 0
    unstable: list[int] = field(default_factory=list)
    not_run: list[int] = field(default_factory=list)
    text_unstable: list[int] = field(default_factory=list)
    images_unstable: list[int] = field(default_factory=list)
    masked_numbers: dict[int, int] = field(default_factory=dict)
    stderr_differs: list[int] = field(default_factory=list)
    straight_seconds: list[float] = field(default_factory=list)
    pipeline_seconds: float = 0.0
    run_state: str = ""
    run_error: str | None = None
    straight_error: str | None = None
    differing: list[CellResult] = field(default_factory=list)
    work_dir: str = ""

    @property
    def reproduced(self) -> bool:
        return self.straight_error is None and self.compared == self.equal and not self.run_error


def short_diff(expected: list[str], actual: list[str], limit: int = 12) -> str:
    """A unified diff of two output lists, at most ``limit`` lines."""
    lines = list(
        difflib.unified_diff(
            "\n".join(expected).splitlines(),
            "\n".join(actual).splitlines(),
            "straight",
            "pipeline",
            lineterm="",
            n=1,
        )
    )
    if len(lines) > limit:
        lines = [*lines[:limit], f"… ({len(lines) - limit} more lines)"]
    return "\n".join(x if len(x) < 160 else x[:157] + "…" for x in lines)


def straight_run(nb_path: Path, out: Path, kernel: str) -> float:
    """Run ``nb_path`` top to bottom with papermill (cwd = its folder); return seconds."""
    import papermill

    start = time.perf_counter()
    papermill.execute_notebook(
        str(nb_path),
        str(out),
        cwd=str(nb_path.parent),
        kernel_name=kernel,
        language="python",
        progress_bar=False,
    )
    return time.perf_counter() - start


def measure(
    nb_path: Path,
    runs: int = 3,
    work: Path | None = None,
    max_parallel: int | None = None,
    reuse: bool = False,
) -> NotebookResult:
    """Measure the fidelity of one notebook (see the module docstring).

    Args:
        nb_path: The notebook (never modified).
        runs: Straight runs used to find the stable cells.
        work: Folder for executed notebooks and the run store (default: a temporary one).
        max_parallel: Steps at once in the pipeline run (default: CPU count).
        reuse: Compare the executed notebooks an earlier measure left in ``work`` instead
            of running again.
    """
    import nbformat
    import papermill

    from jupyter_pipeline.analysis import analyze_notebook
    from jupyter_pipeline.runners.local import LocalRunner
    from jupyter_pipeline.store import RunStore

    nb_path = nb_path.resolve()
    work = Path(work or tempfile.mkdtemp(prefix="jp-fidelity-")) / nb_path.stem
    work.mkdir(parents=True, exist_ok=True)
    result = NotebookResult(notebook=nb_path.name, work_dir=str(work))
    pipeline = analyze_notebook(nb_path, split="cells")
    result.steps = len(pipeline.steps)
    source = nbformat.read(str(nb_path), as_version=4)
    code = [i for i, c in enumerate(source.cells) if c.cell_type == "code"]
    result.code_cells = len(code)
    step_of = {c: s.name for s in pipeline.steps for c in s.cells}

    straight: list[Any] = []
    merged_path = work / "pipeline.ipynb"
    timings = work / "timings.json"
    if reuse and timings.exists():
        # Re-compare the notebooks executed by an earlier measure (same work folder).
        saved = json.loads(timings.read_text())
        for key in ("straight_seconds", "pipeline_seconds", "run_state", "run_error"):
            setattr(result, key, saved[key])
        straight = [
            nbformat.read(str(work / f"straight-{k}.ipynb"), as_version=4)
            for k in range(len(result.straight_seconds))
        ]
    else:
        for k in range(runs):
            out = work / f"straight-{k}.ipynb"
            try:
                result.straight_seconds.append(straight_run(nb_path, out, pipeline.kernel_name))
            except papermill.PapermillExecutionError as exc:
                result.straight_error = f"cell {exc.cell_index}: {exc.ename}: {exc.evalue}"
                return result
            straight.append(nbformat.read(str(out), as_version=4))
        start = time.perf_counter()
        with RunStore(work / "store" / "runs.db") as store:
            # A straight run ignores GPU limit tags (Kale's are for KFP): so does the pipeline.
            runner = LocalRunner(store, max_parallel=max_parallel, cache=False, allow_cpu=True)
            run = runner.run(pipeline, nb_path, parameters={}, output=merged_path)
        result.pipeline_seconds = time.perf_counter() - start
        result.run_state = run.state.value
        failed = [s for s in run.steps if s.error]
        if failed:
            result.run_error = "; ".join(f"{s.step}: {s.error}" for s in failed)
        keys = ("straight_seconds", "pipeline_seconds", "run_state", "run_error")
        timings.write_text(json.dumps({k: getattr(result, k) for k in keys}))
    merged = nbformat.read(str(merged_path), as_version=4)

    for i in code:
        if i not in step_of:
            # skip-tagged (and imports/functions/parameters) cells keep their role: the
            # pipeline does not run them as cells, so they have no outputs to compare
            result.not_run.append(i)
            continue
        ref = [cell_outputs(nb.cells[i]) for nb in straight]
        text = text_expectation([r["text"] for r in ref])
        images_stable = all(r["images"] == ref[0]["images"] for r in ref)
        has_images = bool(ref[0]["images"])
        cr = CellResult(
            cell=i, step=step_of[i], stable=text is not None or (images_stable and has_images)
        )
        if not cr.stable:
            result.unstable.append(i)
            continue
        if text is None:
            result.text_unstable.append(i)
        elif masked_numbers(text):
            result.masked_numbers[i] = masked_numbers(text)
        if has_images and not images_stable:
            result.images_unstable.append(i)
        got = cell_outputs(merged.cells[i])
        text_ok = text is None or text_matches(text, got["text"])
        images_ok = not images_stable or got["images"] == ref[0]["images"]
        cr.equal = text_ok and images_ok
        if all(r["stderr"] == ref[0]["stderr"] for r in ref):
            cr.stderr_equal = got["stderr"] == ref[0]["stderr"]
            if not cr.stderr_equal:
                result.stderr_differs.append(i)
        result.compared += 1
        if cr.equal:
            result.equal += 1
        else:
            exp = ref[0]["text"] + ref[0]["images"]
            act = got["text"] + got["images"]
            cr.diff = short_diff(exp, act)
            result.differing.append(cr)
    return result


def report(r: NotebookResult) -> str:
    """Human-readable lines for one notebook."""
    mean = sum(r.straight_seconds) / len(r.straight_seconds) if r.straight_seconds else 0.0
    status = "REPRODUCED" if r.reproduced else "DIFFERS"
    lines = [
        f"{r.notebook}: {status} — {r.equal}/{r.compared} compared cells equal "
        f"({r.code_cells} code cells, {len(r.unstable)} unstable, {r.steps} steps); "
        f"straight {mean:.1f} s, pipeline {r.pipeline_seconds:.1f} s"
    ]
    if r.straight_error:
        lines.append(f"  straight run failed: {r.straight_error}")
    if r.run_error:
        lines.append(f"  pipeline failed: {r.run_error}")
    if r.not_run:
        lines.append(f"  role cells the pipeline does not run as cells: {r.not_run}")
    if r.unstable:
        lines.append(f"  unstable between straight runs (not compared): cells {r.unstable}")
    if r.text_unstable:
        lines.append(f"  text unstable, images compared: cells {r.text_unstable}")
    if r.images_unstable:
        lines.append(f"  images unstable, text compared: cells {r.images_unstable}")
    if r.masked_numbers:
        lines.append(f"  numbers masked (they vary between straight runs): {r.masked_numbers}")
    if r.stderr_differs:
        lines.append(f"  stderr differs (not counted): cells {r.stderr_differs}")
    if r.differing:
        first = r.differing[0]
        more = f" (and cells {[d.cell for d in r.differing[1:]]})" if len(r.differing) > 1 else ""
        lines.append(f"  first differing cell: {first.cell} (step {first.step}){more}")
        lines.extend("    " + x for x in first.diff.splitlines())
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the fidelity measure and print one block per notebook and the total."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: the whole corpus")
    parser.add_argument("--runs", type=int, default=3, help="straight runs (default 3)")
    parser.add_argument("--max-parallel", type=int, default=None)
    parser.add_argument("--keep", type=Path, help="keep executed notebooks under this folder")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument(
        "--reuse", action="store_true", help="re-compare what an earlier --keep run executed"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    notebooks = args.notebooks or sorted(CORPUS.glob("*.ipynb"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="jp-fidelity-"))
    results = []
    total = time.perf_counter()
    for nb in notebooks:
        r = measure(nb, args.runs, work, args.max_parallel, reuse=args.reuse)
        results.append(r)
        print(report(r), flush=True)
    ok = sum(r.reproduced for r in results)
    cells = sum(r.compared for r in results)
    equal = sum(r.equal for r in results)
    straight = sum(sum(r.straight_seconds) / max(1, len(r.straight_seconds)) for r in results)
    pipe = sum(r.pipeline_seconds for r in results)
    print(
        f"\n{ok}/{len(results)} notebooks fully reproduced; {equal}/{cells} compared cells equal; "
        f"straight runs {straight:.0f} s, pipeline runs {pipe:.0f} s "
        f"(ratio {pipe / max(straight, 1e-9):.2f}), wall {time.perf_counter() - total:.0f} s"
    )
    print(f"executed notebooks under {work}")
    if args.json:
        data = [{**asdict(r), "reproduced": r.reproduced} for r in results]
        args.json.write_text(json.dumps(data, indent=1))
    return 0 if ok == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
