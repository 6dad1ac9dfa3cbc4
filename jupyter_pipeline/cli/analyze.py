"""``analyze``: show the steps, their inputs and outputs, the edges and their reasons."""

from __future__ import annotations

import argparse
import json
import sys

from jupyter_pipeline.cli.common import where
from jupyter_pipeline.model import EdgeKind, Pipeline, Severity

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


def to_dot(pipeline: Pipeline) -> str:
    """Render the step graph in Graphviz dot, edges labelled with what they carry."""
    lines = [f"digraph {json.dumps(pipeline.name)} {{", "  rankdir=TB;", "  node [shape=box];"]
    for s in pipeline.steps:
        label = s.display_name + (f"\\ncells {_cells(s.cells)}" if s.cells else "")
        lines.append(f"  {json.dumps(s.name)} [label={json.dumps(label)}];")
    for e in pipeline.edges:
        label = ", ".join(e.variables) if e.variables else e.kind.value
        style = ' style="dashed"' if e.kind is not EdgeKind.data else ""
        src, dst = json.dumps(e.source), json.dumps(e.target)
        lines.append(f"  {src} -> {dst} [label={json.dumps(label)}{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(pipeline: Pipeline) -> str:
    """Render the step graph as a Mermaid flowchart."""
    ids = {s.name: f"s{i}" for i, s in enumerate(pipeline.steps)}
    lines = ["flowchart TD"]
    for s in pipeline.steps:
        lines.append(f'  {ids[s.name]}["{_mermaid_text(s.display_name)}"]')
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


def print_report(pipeline: Pipeline) -> None:
    """Print a human-readable report of the analysis with rich."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{pipeline.name}[/bold]  ({pipeline.notebook})")
    if pipeline.parameters:
        params = ", ".join(f"{p.name}={p.default!r} ({p.type.value})" for p in pipeline.parameters)
        console.print(f"parameters: {params}")
    if pipeline.metrics:
        console.print("metrics: " + ", ".join(m.name for m in pipeline.metrics))
    table = Table(show_lines=False, pad_edge=False)
    table.add_column("step", style="bold")
    table.add_column("cells")
    table.add_column("after")
    table.add_column("inputs")
    table.add_column("outputs")
    for s in pipeline.steps:
        inputs = ", ".join(s.inputs + [f"{p} (param)" for p in s.parameters])
        state = ", ".join(f"{k} (state)" for k in s.state_inputs)
        table.add_row(
            s.display_name if s.display_name == s.name else f"{s.name} ({s.display_name})",
            _cells(s.cells),
            ", ".join(s.depends_on) or "-",
            ", ".join(x for x in (inputs, state) if x) or "-",
            ", ".join(s.outputs + [f"{k} (state)" for k in s.state_outputs]) or "-",
        )
    console.print(table)
    if pipeline.edges:
        console.print("[bold]edges[/bold]")
        for e in pipeline.edges:
            what = ", ".join(e.variables) if e.variables else ""
            console.print(f"  {e.source} → {e.target} [{e.kind.value}] {what}")
            console.print(f"      [dim]{e.reason}[/dim]")
    if pipeline.diagnostics:
        console.print("[bold]diagnostics[/bold]")
        for d in pipeline.diagnostics:
            style = _SEVERITY_STYLE[d.severity]
            console.print(
                f"  [{style}]{d.severity.value}[/{style}] {where(d)}{d.message} "
                f"[dim]({d.code})[/dim]"
            )
    n_err = len(pipeline.errors)
    n_warn = sum(1 for d in pipeline.diagnostics if d.severity is Severity.warning)
    console.print(
        f"{len(pipeline.steps)} steps, {len(pipeline.edges)} edges, "
        f"{n_err} errors, {n_warn} warnings"
    )
