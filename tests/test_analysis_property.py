"""Property test: generated Python programs, cut into tagged cells, never crash the analyzer.

Programs use a small pool of names so reads, writes, deletions and mutations collide often;
statements cover assignments, ``del``, ``if``/``for``/``while``/``try``/``with``/``match``,
``def``/``class``/``lambda``/comprehensions, calls and method calls, stdlib imports, ``global``,
walrus and IPython lines. The analysis may report anything, but its result must be
self-consistent: each input comes from an earlier step that lists it as an output, outputs are
exactly what later steps take, ``depends_on`` covers every edge, and the graph is acyclic.

Profiles: ``dev`` (default, 150 examples) and ``ci`` (2,000); pick with ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from random import Random

import nbformat
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nbformat import v4

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.model import EdgeKind, Pipeline

settings.register_profile(
    "ci",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev",
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

NAMES = ["a", "b", "x", "df", "n", "items", "f", "g", "C", "np", "random", "err"]
ATTRS = ["append", "extend", "copy", "head", "sort", "update", "pop", "fit", "items", "value"]
IMPORTS = [
    "import math",
    "import random",
    "import numpy as np",
    "import os",
    "import collections as items",
    "from math import sqrt as g",
    "from math import *",
    "import json, re",
]
MAGICS = [
    "%time {n} = {e}",
    "%timeit {e}",
    "%matplotlib inline",
    "!echo hi",
    "{n} = !ls",
    "{n}?",
    "%run other.py",
    "%load_ext autoreload",
]

# Programs are built by plain functions from a random.Random seeded per statement: one draw
# per statement keeps generation fast (2,000 examples well under a minute) while Hypothesis
# can still shrink a failure to fewer statements and smaller seeds (choice 0 is the simplest).

_LEAVES = ["'s'", "'a > @x'", "None", "True", "[1, 2]", "{'k': 1}"]
_SPECIAL = [
    "random.random()",
    "np.random.rand(2)",
    "eval('x + 1')",
    "df.query('a > @n')",
    "open('data.csv').read()",
    "_",
    "{k: v for k, v in {}.items()}",
    "(y for y in range(2))",
]


def gen_expr(r: Random, depth: int = 0) -> str:
    """A Python expression over the name pool."""
    kind = r.randrange(12) if depth < 2 else r.randrange(4)
    if kind <= 1:
        return r.choice(NAMES)
    if kind == 2:
        return str(r.randrange(-3, 10))
    if kind == 3:
        return r.choice(_LEAVES)
    sub = lambda: gen_expr(r, depth + 1)  # noqa: E731
    if kind == 4:
        return f"({sub()} + {sub()})"
    if kind == 5:
        return f"{r.choice(NAMES)}({sub() if r.randrange(2) else ''})"
    if kind == 6:
        return f"{r.choice(NAMES)}.{r.choice(ATTRS)}({sub()})"
    if kind == 7:
        v = r.choice(NAMES)
        return f"[{v} * 2 for {v} in {sub()} if {sub()}]"
    if kind == 8:
        return f"(lambda {r.choice(NAMES)}: {sub()})"
    if kind == 9:
        return f"({r.choice(NAMES)} := {sub()})"
    if kind == 10:
        return f"{r.choice(NAMES)}[{sub()}]"
    return r.choice(_SPECIAL)


def _indent(lines: list[str]) -> list[str]:
    return ["    " + line for line in lines]


def gen_block(r: Random, depth: int) -> list[str]:
    """One to three statements (never empty)."""
    out: list[str] = []
    for _ in range(r.randint(1, 3 if depth < 2 else 1)):
        out += gen_statement(r, depth)
    return out


def _function(r: Random, depth: int, method: bool = False) -> list[str]:
    params = r.sample(NAMES, r.randint(0, 2))
    if method:
        params = ["self", *params]
    head = "async def" if r.randrange(6) == 0 else "def"
    body: list[str] = []
    if not method and r.randrange(2):
        body.append(f"global {r.choice(NAMES)}")
    if method and r.randrange(2):
        body.append(f"self.value = {gen_expr(r)}")
    body += gen_block(r, depth + 1)
    body.append(f"return {gen_expr(r)}")
    deco = ["@" + r.choice(NAMES)] if r.randrange(5) == 0 else []
    default = f"={gen_expr(r, 2)}" if params and not method and r.randrange(2) else ""
    fname = "__init__" if method and r.randrange(2) else r.choice(NAMES)
    return [*deco, f"{head} {fname}({', '.join(params)}{default}):", *_indent(body)]


def gen_statement(r: Random, depth: int = 0, top: bool = False) -> list[str]:
    """A statement as source lines (compound statements indent their bodies)."""
    n, e = (lambda: r.choice(NAMES)), (lambda: gen_expr(r))
    simple = [
        lambda: [f"{n()} = {e()}"],
        lambda: [f"{n()}, {n()} = {e()}, {e()}"],
        lambda: [f"{n()} += {e()}"],
        lambda: [f"del {n()}"],
        lambda: [f"{n()}.{r.choice(ATTRS)}({e()})"],
        lambda: [f"{n()}[{e()}] = {e()}"],
        lambda: [f"{n()}.attr = {e()}"],
        lambda: [f"del {n()}[{e()}]"],
        lambda: [f"print({e()})"],
        lambda: [f"{n()}({n()}, inplace=True)"],
        lambda: [r.choice(IMPORTS)],
        lambda: [r.choice(["random.seed(1)", "np.random.seed(0)", "os.chdir('.')"])],
        lambda: [r.choice(["np.random.shuffle(x)", "df.to_csv('data.csv')"])],
        lambda: [f"with open('out.txt', 'w') as {n()}:", "    pass"],
    ]
    if top:
        simple.append(lambda: [r.choice(MAGICS).format(n=n(), e=e())])
    compound = [
        lambda: (
            [f"if {e()}:", *_indent(gen_block(r, depth + 1))]
            + (["else:", *_indent(gen_block(r, depth + 1))] if r.randrange(2) else [])
        ),
        lambda: [f"for {n()} in {e()}:", *_indent(gen_block(r, depth + 1))],
        lambda: [f"while {e()}:", *_indent(gen_block(r, depth + 1))],
        lambda: (
            [
                "try:",
                *_indent(gen_block(r, depth + 1)),
                f"except Exception as {n()}:",
                *_indent(gen_block(r, depth + 1)),
            ]
            + (["finally:", *_indent(gen_block(r, depth + 1))] if r.randrange(2) else [])
        ),
        lambda: [f"with {e()} as {n()}:", *_indent(gen_block(r, depth + 1))],
        lambda: _function(r, depth),
        lambda: [f"class {n()}:", f"    attr = {e()}", *_indent(_function(r, depth + 1, True))],
        lambda: [
            f"match {e()}:",
            f"    case [{n()}, *{n()}]:",
            *_indent(_indent(gen_block(r, depth + 1))),
            "    case _:",
            *_indent(_indent(gen_block(r, depth + 1))),
        ],
    ]
    options = simple + (compound if depth < 2 else [])
    return r.choice(options)()


_STEPS = ["load", "prep", "train", "Eval_1", "load"]
_ROLES = ["skip", "imports", "functions", "pipeline-parameters", "parameters", "pipeline-metrics"]


def build_notebook(seeds: list[int]) -> nbformat.NotebookNode:
    """A notebook from per-statement seeds: statements grouped into cells with valid tags."""
    cells: list[tuple[list[str], Random]] = []
    start = ["a = [1]", "b = {}", "x = 1", "df = [3]", "n = 2", "items = []"]
    for seed in seeds:
        r = Random(seed)
        lines = gen_statement(r, top=True)
        if not cells or r.randrange(2) == 0:
            cells.append(([], r))
        cells[-1][0].extend(lines)
    out = []
    steps: list[str] = []
    if seeds[0] % 3:  # usually start from data, so later cells read rather than miss names
        out.append(v4.new_code_cell("\n".join(start), metadata={"tags": ["step:start"]}))
        steps.append("start")
    for lines, r in cells:
        if r.randrange(6) == 0:
            out.append(v4.new_markdown_cell(r.choice(["# Part", "## Sub", "text"])))
        cell = v4.new_code_cell("\n".join(lines))
        tags: list[str] = []
        roll = r.randrange(10)
        if roll <= 4:
            step = r.choice(_STEPS)
            tags.append(f"step:{step}")
            earlier = [s for s in steps if s != step]
            if earlier and r.randrange(2):
                tags.append(f"prev:{r.choice(earlier)}")
            steps.append(step)
        elif roll <= 6:
            tags.append(r.choice(_ROLES))
        cell.metadata["tags"] = tags
        out.append(cell)
    return v4.new_notebook(cells=out)


notebooks = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=12).map(build_notebook)


def check_consistent(p: Pipeline, n_cells: int) -> None:
    """The invariants every analysis result must satisfy."""
    index = {s.name: k for k, s in enumerate(p.steps)}
    assert len(index) == len(p.steps), "step names are unique"
    seen_cells: set[int] = set()
    taken: dict[str, set[str]] = {s.name: set() for s in p.steps}
    state_taken: dict[str, set[str]] = {s.name: set() for s in p.steps}
    # A parameter read by a replayed imports/functions cell is a parameter of every step (the
    # replay runs before the inputs load), so only such a name may also be a step's input.
    everywhere = set.intersection(*(set(s.parameters) for s in p.steps)) if p.steps else set()
    for k, s in enumerate(p.steps):
        assert s.cells == sorted(s.cells) and all(0 <= c < n_cells for c in s.cells)
        assert not seen_cells & set(s.cells), "a cell belongs to one step"
        seen_cells |= set(s.cells)
        assert s.inputs == sorted(set(s.inputs)) and s.outputs == sorted(set(s.outputs))
        assert set(s.input_sources) == set(s.inputs), "every input has a source step"
        for var, src in s.input_sources.items():
            assert index[src] < k, f"{var} comes from an earlier step"
            taken[src].add(var)
        for pv, src in s.state_inputs.items():
            assert index[src] < k
            state_taken[src].add(pv)
        sources = set(s.input_sources.values()) | set(s.state_inputs.values())
        assert sources <= set(s.depends_on), "depends_on covers every source"
        assert all(index[d] < k for d in s.depends_on), "dependencies come earlier: no cycle"
        assert set(s.inputs) & set(s.parameters) <= everywhere
    for s in p.steps:
        assert set(s.outputs) == taken[s.name], "outputs are exactly what later steps take"
        assert set(s.state_outputs) == state_taken[s.name]
    by_target: dict[str, set[str]] = {s.name: set() for s in p.steps}
    for e in p.edges:
        assert index[e.source] < index[e.target] and e.reason
        by_target[e.target].add(e.source)
        if e.kind is EdgeKind.data:
            target = p.step(e.target)
            assert e.variables and all(target.input_sources[v] == e.source for v in e.variables)
    for s in p.steps:
        assert by_target[s.name] == set(s.depends_on), "every dependency has an edge"
    for d in p.diagnostics:
        assert d.cell is None or 0 <= d.cell < n_cells
        assert d.code and d.message


@given(notebooks)
# Found by this test: a parameter that an imports cell reads is also a later step's input.
@example(book=build_notebook([1, 0, 3205421, 727133386, 0]))
def test_analyze_never_raises_and_is_consistent(book):
    for split in ("tags", "cells"):
        p = analyze(book, path="generated.ipynb", split=split)
        check_consistent(p, len(book.cells))
