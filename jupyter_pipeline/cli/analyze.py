"""``analyze``: show the steps, their inputs and outputs, the edges and their reasons."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TYPE_CHECKING

from jupyter_pipeline.cli.common import console as make_console
from jupyter_pipeline.cli.common import where
from jupyter_pipeline.model import EdgeKind, Pipeline, Severity

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_SEVERITY_STYLE = {Severity.error: "bold red", Severity.warning: "yellow", Severity.info: "cyan"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``analyze`` subcommand."""
    p = sub.add_parser(
        "analyze",
        help="infer the pipeline a notebook makes and report anything doubtful",
        description="Infer steps, their inputs/outputs and edges from a tagged notebook.",
    )
    p.add_argument("notebook", help="path of the .ipynb file")
    add_split_option(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print the pipeline model as JSON")
    fmt.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    fmt.add_argument("--mermaid", action="store_true", help="print the graph as Mermaid")
    p.set_defaults(handler=run_analyze)


def add_split_option(p: argparse.ArgumentParser) -> None:
    """The ``--split`` option shared by every command that analyzes a notebook."""
    p.add_argument(
        "--split",
        choices=("tags", "headings", "cells"),
        default="tags",
        help="how to cut the notebook into steps: by step: tags (default), one step per "
        "top-level markdown heading, or one step per code cell",
    )


def run_analyze(args: argparse.Namespace) -> int:
    """Handle ``jupyter-pipeline analyze``."""
    from jupyter_pipeline.analysis import analyze_notebook

    pipeline = analyze_notebook(args.notebook, split=args.split)
    if args.json:
        sys.stdout.write(pipeline.model_dump_json(indent=2) + "\n")
    elif args.dot:
        sys.stdout.write(to_dot(pipeline))
    elif args.mermaid:
        sys.stdout.write(to_mermaid(pipeline))
    else:
        print_report(pipeline)
    return 1 if pipeline.errors else 0


def _dot_str(text: str) -> str:
    """A dot double-quoted string; a newline in ``text`` becomes dot's line break ``\\n``.

    (``json.dumps`` is not dot: it doubled the backslash of a ``\\n`` meant as a line break,
    so Graphviz showed it literally, and escaped non-ASCII names as ``\\uXXXX``.)
    """
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _labels(pipeline: Pipeline) -> dict[str, str]:
    """Each step's label: its display name, or its unique name where display names repeat.

    (A notebook split by its parameters cell has steps ``main`` and ``main-2`` that both
    display as "main"; a graph showing two "main" boxes explains nothing.)
    """
    seen = Counter(s.display_name for s in pipeline.steps)
    return {s.name: s.display_name if seen[s.display_name] == 1 else s.name for s in pipeline.steps}


def to_dot(pipeline: Pipeline) -> str:
    """Render the step graph in Graphviz dot, edges labelled with what they carry."""
    lines = [f"digraph {_dot_str(pipeline.name)} {{", "  rankdir=TB;", "  node [shape=box];"]
    labels = _labels(pipeline)
    for s in pipeline.steps:
        label = labels[s.name] + (f"\ncells {_cells(s.cells)}" if s.cells else "")
        lines.append(f"  {_dot_str(s.name)} [label={_dot_str(label)}];")
    for e in pipeline.edges:
        label = ", ".join(e.variables) if e.variables else e.kind.value
        style = ' style="dashed"' if e.kind is not EdgeKind.data else ""
        src, dst = _dot_str(e.source), _dot_str(e.target)
        lines.append(f"  {src} -> {dst} [label={_dot_str(label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(pipeline: Pipeline) -> str:
    """Render the step graph as a Mermaid flowchart."""
    ids = {s.name: f"s{i}" for i, s in enumerate(pipeline.steps)}
    labels = _labels(pipeline)
    lines = ["flowchart TD"]
    for s in pipeline.steps:
        lines.append(f'  {ids[s.name]}["{_mermaid_text(labels[s.name])}"]')
    for e in pipeline.edges:
        label = ", ".join(e.variables) if e.variables else e.kind.value
        arrow = "-->" if e.kind is EdgeKind.data else "-.->"
        lines.append(f'  {ids[e.source]} {arrow}|"{_mermaid_text(label)}"| {ids[e.target]}')
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _cells(cells: list[int]) -> str:
    """Compact cell ranges: [1, 2, 3, 5] → '1-3, 5'."""
    out: list[str] = []
    start = prev = None
    for c in cells:
        if start is None:
            start = prev = c
        elif c == prev + 1:  # type: ignore[operator]
            prev = c
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = c
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def _print_hanging(console: Console, text: Text, first: int, rest: int) -> None:
    """Print ``text`` wrapped to the console, indented ``first``, wrapped lines ``rest``.

    (Printed as is, rich wraps long lines back to column 0, where an edge's reason or a
    diagnostic's message runs into the next item.)
    """
    from rich.text import Text

    width = max(console.width - rest, 20)
    for k, line in enumerate(text.wrap(console, width, overflow="fold")):
        console.print(Text(" " * (first if k == 0 else rest)) + line, soft_wrap=True)


def _step_rows(pipeline: Pipeline) -> list[tuple[str, str, str, str, str]]:
    """step, cells, after, inputs, outputs: one row per step, as plain text."""
    rows = []
    for s in pipeline.steps:
        inputs = ", ".join(s.inputs + [f"{p} (param)" for p in s.parameters])
        state = ", ".join(f"{k} (state)" for k in s.state_inputs)
        rows.append(
            (
                s.display_name if s.display_name == s.name else f"{s.name} ({s.display_name})",
                _cells(s.cells),
                ", ".join(s.depends_on) or "-",
                ", ".join(x for x in (inputs, state) if x) or "-",
                ", ".join(s.outputs + [f"{k} (state)" for k in s.state_outputs]) or "-",
            )
        )
    return rows


def _print_steps(console: Console, pipeline: Pipeline) -> None:
    """The steps as a table when it fits whole; else one block per step.

    A name is never cut: a table whose narrowest layout still needs more columns than
    the console has (an 80-column pipe) would cut step and variable names (…), so the
    steps are listed one under the other, their wrapped lines indented.
    """
    from rich.table import Table
    from rich.text import Text

    headers = ("step", "cells", "after", "inputs", "outputs")
    rows = _step_rows(pipeline)
    # Each column at least as wide as its longest word (a name), so no name is cut or broken.
    widths = [
        max(len(word) for text in (header, *(r[k] for r in rows)) for word in text.split())
        for k, header in enumerate(headers)
    ]
    if sum(widths) + 3 * len(widths) + 1 <= console.width:  # + padding and borders
        table = Table(show_lines=False, pad_edge=False)
        for header, width in zip(headers, widths, strict=True):
            table.add_column(header, style="bold" if header == "step" else None, min_width=width)
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    for step, cells, after, inputs, outputs in rows:
        _print_hanging(console, Text(step, style="bold") + Text(f"  cells {cells}"), 0, 2)
        for label, value in (("after", after), ("inputs", inputs), ("outputs", outputs)):
            _print_hanging(console, Text(f"{label + ':':<9}{value}"), 2, 11)


def print_report(pipeline: Pipeline) -> None:
    """Print a human-readable report of the analysis with rich."""
    from rich.text import Text

    console = make_console(highlight=False)
    title = Text.assemble((pipeline.name, "bold"), f"  ({pipeline.notebook})")
    _print_hanging(console, title, 0, 4)
    if pipeline.parameters:
        params = ", ".join(f"{p.name}={p.default!r} ({p.type.value})" for p in pipeline.parameters)
        _print_hanging(console, Text(f"parameters: {params}"), 0, 4)
    if pipeline.metrics:
        _print_hanging(
            console, Text("metrics: " + ", ".join(m.name for m in pipeline.metrics)), 0, 4
        )
    _print_steps(console, pipeline)
    if pipeline.edges:
        console.print("[bold]edges[/bold]")
        for e in pipeline.edges:
            what = f"{e.source} → {e.target} [{e.kind.value}]"
            if e.variables:
                what += " " + ", ".join(e.variables)
            _print_hanging(console, Text(what), 2, 6)
            _print_hanging(console, Text(e.reason, style="dim"), 6, 6)
    if pipeline.diagnostics:
        console.print("[bold]diagnostics[/bold]")
        for d in pipeline.diagnostics:
            line = Text.assemble(
                (d.severity.value, _SEVERITY_STYLE[d.severity]),
                f" {where(d)}{d.message} ",
                (f"({d.code})", "dim"),
            )
            _print_hanging(console, line, 2, 4)
    n_err = len(pipeline.errors)
    n_warn = sum(1 for d in pipeline.diagnostics if d.severity is Severity.warning)
    console.print(
        f"{len(pipeline.steps)} steps, {len(pipeline.edges)} edges, "
        f"{n_err} errors, {n_warn} warnings"
    )
