"""How a local run shows on the terminal: live progress, failures, the exit code.

:class:`_Progress` is the ``on_event`` of a run started from the command line (a rich live
table on a terminal, one line per state change otherwise); :func:`_print_failures` shows
each failed step's error with its source cell, executed notebook and log.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jupyter_pipeline.cli import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    from jupyter_pipeline.model import Run, StepRun


_ICONS = {
    "queued": "·",
    "running": "▶",
    "succeeded": "✓",
    "cached": "✓",
    "failed": "✗",
    "skipped": "-",
    "cancelled": "■",
}
_COLORS = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "cached": "green",
    "failed": "red",
    "skipped": "yellow",
    "cancelled": "magenta",
}


def _duration(s: StepRun | Run) -> str:
    if s.started is None:
        return ""
    end = s.finished or time.time()
    return f"{end - s.started:.1f}s"


class _Progress:
    """One line per step: rich live table on a terminal, plain transition lines otherwise."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.tty = enabled and sys.stdout.isatty()
        self.run: Run | None = None
        self.seen: dict[str, str] = {}
        self.warming: set[str] = set()
        self.live: Any = None

    def __enter__(self) -> _Progress:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(
                self, console=Console(), refresh_per_second=4, transient=False
            ).__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.refresh()
            self.live.__exit__(None, None, None)

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table.grid(padding=(0, 2))
        if self.run is None:
            return table
        for s in self.run.steps:
            state = s.state.value
            label = state
            if state == "queued" and s.step in self.warming:
                label = "warming"
            note = s.error or "" if state in ("failed", "skipped") else ""
            if state == "running" and s.attempts > 1:
                note = f"attempt {s.attempts}"
            table.add_row(
                f"[{_COLORS[state]}]{_ICONS[state]}[/]",
                s.step,
                f"[{_COLORS[state]}]{label}[/]",
                _duration(s) if state != "cached" else "",
                f"[dim]{note}[/]",
            )
        return table

    def __call__(self, event: Any) -> None:
        self.run = event.run
        if event.kind == "warming" and event.step:
            self.warming.add(event.step)
        if not self.enabled or self.tty:
            return
        for s in event.run.steps:
            state = s.state.value
            if self.seen.get(s.step) == state or state == "queued":
                continue
            self.seen[s.step] = state
            extra = f" {_duration(s)}" if state not in ("running", "skipped", "cached") else ""
            if state == "running" and s.attempts > 1:
                extra = f" (attempt {s.attempts})"
            if state in ("failed", "skipped", "cancelled") and s.error:
                extra += f": {s.error}"
            print(f"{_ICONS[state]} {s.step}: {state}{extra}", flush=True)


def _print_failures(run: Run, notebook: str | Path) -> None:
    if not any(s.state.value == "failed" for s in run.steps):
        return  # nothing to show: don't read and parse the notebook for it
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:
        nb = None
    for s in run.steps:
        if s.state.value != "failed":
            continue
        print(f"\n{_error_line(s)}", file=sys.stderr)
        if nb is not None and s.error_cell is not None and s.error_cell < len(nb.cells):
            src = nb.cells[s.error_cell].source.splitlines()
            shown = src[:15] + ([f"... ({len(src) - 15} more lines)"] if len(src) > 15 else [])
            for line in shown:
                print(f"    | {line}", file=sys.stderr)
        if s.executed_notebook:
            print(f"  executed notebook: {s.executed_notebook}", file=sys.stderr)
        if s.log_path:
            print(f"  log: {s.log_path}", file=sys.stderr)


def _error_line(s: StepRun) -> str:
    """``step NAME failed in cell N: error`` (the runtime's messages already read so)."""
    error = s.error or "failed"
    if error.startswith(f"step {s.step}"):
        return error
    where = f" in cell {s.error_cell}" if s.error_cell is not None else ""
    return f"step {s.step} failed{where}: {error}"


def _exit_code(run: Run) -> int:
    return EXIT_OK if run.state.value == "succeeded" else EXIT_FAILURE
