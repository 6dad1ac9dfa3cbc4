"""Shared test helpers: build notebooks in-test with nbformat.v4, write them, fingerprint files."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import nbformat
from nbformat import v4

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.model import Pipeline

CellSpec = str | tuple[str, list[str]] | tuple[str, list[str], str]


def md(source: str, tags: list[str] | None = None) -> tuple[str, list[str], str]:
    """A markdown cell spec for :func:`nb`."""
    return (source, list(tags or []), "markdown")


def nb(*cells: CellSpec) -> nbformat.NotebookNode:
    """Build a notebook: a cell is a source string, ``(source, tags)`` or ``md(...)``."""
    out = []
    for spec in cells:
        if isinstance(spec, str):
            source, tags, kind = spec, [], "code"
        elif len(spec) == 2:
            source, tags, kind = spec[0], spec[1], "code"
        else:
            source, tags, kind = spec
        cell = v4.new_markdown_cell(source) if kind == "markdown" else v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = list(tags)
        out.append(cell)
    return v4.new_notebook(
        cells=out, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}}
    )


def run(*cells: CellSpec, split: str = "tags") -> Pipeline:
    """Analyze a notebook built from ``cells``."""
    return analyze(nb(*cells), path="t.ipynb", split=split)  # type: ignore[arg-type]


def steps(p: Pipeline) -> dict[str, dict[str, Any]]:
    """Step name → the facts most tests assert, in a compact comparable form."""
    return {
        s.name: {
            "cells": s.cells,
            "inputs": s.inputs,
            "outputs": s.outputs,
            "depends_on": s.depends_on,
        }
        for s in p.steps
    }


def io(p: Pipeline) -> dict[str, tuple[list[str], list[str], list[str]]]:
    """Step name → (inputs, outputs, depends_on)."""
    return {s.name: (s.inputs, s.outputs, s.depends_on) for s in p.steps}


def edges(p: Pipeline) -> list[tuple[str, str, str, list[str]]]:
    """Edges as (source, target, kind, variables)."""
    return [(e.source, e.target, e.kind.value, e.variables) for e in p.edges]


def diags(
    p: Pipeline, *, include_info: bool = False
) -> list[tuple[str, str, int | None, int | None]]:
    """Diagnostics as (code, severity, cell, line); info ones only when asked."""
    return [
        (d.code, d.severity.value, d.cell, d.line)
        for d in p.diagnostics
        if include_info or d.severity.value != "info"
    ]


def codes(p: Pipeline) -> list[str]:
    """Codes of all diagnostics, info included, in order."""
    return [d.code for d in p.diagnostics]


def code_cell(source: str, *tags: str) -> nbformat.NotebookNode:
    """A code cell with the given tags."""
    cell = v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write_nb(path: Path, cells: list[nbformat.NotebookNode]) -> Path:
    """Write a python3 notebook made of ``cells`` to ``path``; return the path."""
    notebook = v4.new_notebook(cells=cells)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(notebook, str(path))
    return path


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (to prove a notebook was not rewritten)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cmdline(proc: Any) -> str:
    """The command line of a psutil process, or "" once it has exited (or is a zombie)."""
    import psutil

    # A kernel spawns short-lived helpers of its own; one may exit between listing and reading.
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def alive(proc: Any) -> bool:
    """True while a psutil process runs (a zombie waiting for its reaper counts as gone)."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def gone_within(pid: int, timeout: float = 30) -> bool:
    """Wait up to ``timeout`` s for process ``pid`` to exit (a zombie counts as gone); True if
    it did. Killing and reaping take longer than a second on a loaded machine."""
    import psutil

    deadline = time.monotonic() + timeout
    while True:
        try:
            if not alive(psutil.Process(pid)):
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stream_text(cell: Any) -> str:
    """All stream output of a cell as one text (a loaded kernel may flush a print in pieces)."""
    return "".join(o.get("text", "") for o in cell.get("outputs", []) if o.output_type == "stream")
