"""Helpers shared by the subcommands that act on a notebook (run, verify, compile, submit)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from nbformat import NotebookNode

from jupyter_pipeline.cli import UsageError
from jupyter_pipeline.model import Diagnostic, Pipeline, Severity

if TYPE_CHECKING:
    from rich.console import Console

    from jupyter_pipeline.model import Run
    from jupyter_pipeline.store import RunStore


def console(**kwargs: Any) -> Console:
    """A rich ``Console`` for stdout whose broken pipe (``… | head``) is a quiet stop.

    rich's own answer to a broken pipe is ``SystemExit(1)``: ``analyze NB | head -2``
    exited 1. Raising ``BrokenPipeError`` instead lets ``main`` stop with the command's
    exit code, as for plain ``print``.
    """
    from rich.console import Console

    class _PipeConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            raise BrokenPipeError

    return _PipeConsole(**kwargs)


class _Stateful(Protocol):
    @property
    def state(self) -> Any: ...


_S = TypeVar("_S", bound=_Stateful)


def wait_finished(current: _S, fetch: Callable[[], _S], seconds: float) -> _S:
    """Poll ``fetch()`` (a run or sweep, re-read) until its state is finished, for at most
    ``seconds``: ``cancel`` waits for the runner to record the cancellation. Returns the
    last value read (``current`` if none was)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current = fetch()
        if current.state.finished:
            break
        time.sleep(0.2)
    return current


def where(d: Diagnostic) -> str:
    """``cell N, line L: `` for a diagnostic pinned to a cell, else ``""``."""
    if d.cell is None:
        return ""
    return f"cell {d.cell}" + (f", line {d.line}" if d.line else "") + ": "


def analyze_or_stop(
    args: argparse.Namespace, action: str, *, include_info: bool, nb: NotebookNode | None = None
) -> Pipeline:
    """Analyze ``args.notebook``, print its diagnostics, stop on errors.

    Diagnostics go to stderr as ``NB: cell N, line L: severity: message [code]``. A run shows
    only what needs action (``include_info=False``); compiling also shows what the compiled
    pipeline does about the notebook (replayed state, carried RNG state…).

    Args:
        args: The parsed command line (``notebook``, ``split``).
        action: What errors stop, for the message ("compiling").
        include_info: Also print info diagnostics.
        nb: The notebook, when the caller has read it already (it is not read again).

    Raises:
        UsageError: The analysis found errors (exit 2), after printing them.
    """
    from jupyter_pipeline.analysis import analyze, analyze_notebook

    if nb is None:
        pipeline = analyze_notebook(args.notebook, split=args.split)
    else:
        pipeline = analyze(nb, path=str(args.notebook), split=args.split)
    for d in pipeline.diagnostics:
        # A step-split note stays: it explains step names (`main-2`) the run then shows.
        if d.severity is Severity.info and not include_info and d.code != "step-split":
            continue
        line = f"{args.notebook}: {where(d)}{d.severity.value}: {d.message} [{d.code}]"
        print(line, file=sys.stderr)
    if pipeline.errors:
        raise UsageError(
            f"{args.notebook}: {len(pipeline.errors)} error(s) above; fix them before {action}"
        )
    return pipeline


def source_language(nb: NotebookNode) -> str:
    """The notebook's language (papermill needs one; Python when the notebook omits it)."""
    meta = nb.metadata
    return meta.get("language_info", {}).get("name") or meta.get("kernelspec", {}).get(
        "language", "python"
    )


def _open_store(args: argparse.Namespace) -> RunStore:
    from jupyter_pipeline.store import RunStore

    return RunStore(args.store)


def _get_run(store: RunStore, run_id: str) -> Run:
    try:
        return store.get_run(run_id)
    except KeyError as exc:
        raise UsageError(exc.args[0] if exc.args else str(exc)) from None


def _check_kernel(pipeline: Pipeline, notebook: str) -> None:
    """Stop early (exit 2) if the notebook's kernel is not installed here.

    The name is resolved as jupyter_client (and so papermill) resolves it when it starts
    the kernel: case-insensitively, and ``python`` means the native kernel (``python3``).
    """
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    name = pipeline.kernel_name
    if name == "python":  # jupyter_client's KernelManager maps it so
        name = NATIVE_KERNEL_NAME
    try:
        manager.get_kernel_spec(name)
    except NoSuchKernel:
        specs = manager.find_kernel_specs()
        raise UsageError(
            f"{notebook}: its kernel {pipeline.kernel_name!r} is not installed here "
            f"(installed: {', '.join(sorted(specs)) or 'none'}); install it or change the "
            "notebook's kernel"
        ) from None
