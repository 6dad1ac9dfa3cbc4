"""Run a pipeline and watch it from any notebook front end (ipywidgets; no server extension).

::

    from jupyter_pipeline.widgets import run, monitor
    run("nb.ipynb", lr=0.1)          # starts a run, shows it live in the output area
    monitor("3f2a91c0")              # attaches to a run started elsewhere (CLI, sidebar)

The run executes in its own runner process (the same detached launcher the Jupyter server
uses), so restarting or closing this kernel does not stop it. The monitor reads the shared
run store (SQLite) a few times a second: steps' states and durations, the running steps'
last log lines, the failing step's error and cell; its Cancel button cancels the run on the
CLI's path (no kernel or process of the run is left behind).
"""

from __future__ import annotations

import codecs
import html
import os
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ipywidgets as w

from jupyter_pipeline.model import Run, RunState
from jupyter_pipeline.notebook import SplitMode
from jupyter_pipeline.store import RunStore

__all__ = ["PipelineError", "RunMonitor", "monitor", "run"]

# Colours readable on light and dark themes; the state is always written as a word too.
STATE_COLOURS = {
    "queued": "#8a8a8a",
    "running": "#1f77b4",
    "succeeded": "#2ca02c",
    "cached": "#17becf",
    "failed": "#d62728",
    "skipped": "#bcbd22",
    "cancelled": "#9467bd",
}


class PipelineError(Exception):
    """The run could not start (bad notebook, parameter, kernel) or the run id is unknown.

    Shown in a notebook as its one-line message, not as a traceback of this library.
    """

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of formatting the traceback: the message says it all.
        return [f"\x1b[31m{type(self).__name__}\x1b[0m: {self}"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(seconds)
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _elapsed(started: float | None, finished: float | None, now: float) -> float | None:
    if started is None:
        return None
    return max(0.0, (finished or now) - started)


def _badge(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#8a8a8a")
    return (
        f'<span class="jp-pipeline-state" data-state="{state}" style="color:{colour};'
        f'font-weight:600">&#9679; {state}</span>'
    )


class _LogTail:
    """The last lines of a growing log file, read from a byte offset (what a terminal shows)."""

    def __init__(self, path: str, keep: int):
        self.path = path
        self.offset = 0
        self.lines: deque[str] = deque(maxlen=keep)
        self.partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < self.offset:  # truncated (a retry restarted it): start over
                    self.offset, self.partial = 0, ""
                    self.lines.clear()
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        text = self.partial + self._decoder.decode(data)
        *done, self.partial = text.split("\n")
        self.lines.extend(_overprint(line) for line in done)

    def last(self) -> list[str]:
        partial = _overprint(self.partial)
        out = [*self.lines, partial] if partial else list(self.lines)
        return out[-(self.lines.maxlen or len(out)) :]


def _overprint(line: str) -> str:
    """A line as a terminal shows it: progress bars redraw themselves with ``\\r``."""
    line = line.removesuffix("\r")
    return line[line.rfind("\r") + 1 :]


class RunMonitor(w.VBox):
    """A live view of one run, updated from the run store by a background thread.

    Attributes:
        run_id: The run's full id.
        run: The latest snapshot read from the store.
        cancel_button: Cancels the run (disabled once it finished).
        header, steps_html, logs_html, error_html: The parts of the view.

    Args:
        run_id: Run id or unique prefix.
        store: A :class:`RunStore` or its database path (default: the CLI's store).
        interval: Seconds between reads of the store while the run goes on.
        log_lines: How many last lines of each running step's log to show.
        follow: Start the background thread (tests call :meth:`refresh` themselves).
    """

    def __init__(
        self,
        run_id: str,
        *,
        store: RunStore | str | Path | None = None,
        interval: float = 0.3,
        log_lines: int = 8,
        follow: bool = True,
    ):
        self._store = store if isinstance(store, RunStore) else RunStore(store)
        try:
            self.run_id = self._store.resolve_id(run_id)
        except KeyError as exc:
            raise PipelineError(exc.args[0] if exc.args else str(exc)) from None
        self.interval = interval
        self.log_lines = log_lines
        self._tails: dict[str, _LogTail] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.header = w.HTML()
        self.steps_html = w.HTML()
        self.logs_html = w.HTML()
        self.error_html = w.HTML()
        self.cancel_button = w.Button(
            description="Cancel", icon="stop", button_style="danger", tooltip="Cancel this run"
        )
        self.cancel_button.on_click(lambda _b: self.cancel())
        top = w.HBox([self.header, self.cancel_button], layout=w.Layout(align_items="center"))
        super().__init__([top, self.steps_html, self.error_html, self.logs_html])
        self.add_class("jp-pipeline-monitor")
        self.run: Run = self._store.get_run(self.run_id)
        self.refresh()
        if follow and not self.run.state.finished:
            self._thread = threading.Thread(
                target=self._follow, name=f"pipeline-monitor-{self.run_id}", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """The run's state, as a word."""
        return self.run.state.value

    @property
    def step_states(self) -> dict[str, str]:
        """Step name → state word, in pipeline order."""
        return {s.step: s.state.value for s in self.run.steps}

    def log_tail(self, step: str) -> list[str]:
        """The last log lines read so far of ``step`` (empty if none yet)."""
        tail = self._tails.get(step)
        return tail.last() if tail else []

    # ------------------------------------------------------------------ updates

    def refresh(self) -> Run:
        """Read the store once and redraw; returns the run."""
        with self._lock:
            run = self._store.get_run(self.run_id)
            self.run = run
            now = time.time()
            for s in run.steps:
                if s.log_path and (s.state is RunState.running or s.step in self._tails):
                    tail = self._tails.get(s.step)
                    if tail is None or tail.path != s.log_path:
                        tail = self._tails[s.step] = _LogTail(s.log_path, self.log_lines)
                    tail.read()
            self._draw(run, now)
        return run

    def _follow(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                run = self.refresh()
            except Exception as exc:  # the store went away (pruned, deleted): say so, stop
                self.error_html.value = f"<pre>monitor stopped: {html.escape(str(exc))}</pre>"
                return
            if run.state.finished:
                time.sleep(0.2)  # the last log bytes land just after the state change
                self.refresh()
                return

    def wait(self, timeout: float | None = None) -> Run:
        """Block until the run finished (or ``timeout`` seconds passed); returns the run."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.run.state.finished:
            if deadline is not None and time.monotonic() > deadline:
                break
            if self._thread is None or not self._thread.is_alive():
                self.refresh()
            time.sleep(min(self.interval, 0.2))
        if self._thread is not None:
            self._thread.join(timeout=5)
        return self.refresh()

    def cancel(self) -> bool:
        """Cancel the run (kills its kernels and runner); True if it was still going."""
        if self.run.state.finished:
            return False
        self.cancel_button.disabled = True
        self.cancel_button.description = "Cancelling…"
        if self.run.backend == "kfp":
            from jupyter_pipeline.runners.kfp import KfpError, KfpRunner

            try:
                return bool(KfpRunner(store=self._store).cancel(self.run_id))
            except KfpError as exc:
                self.error_html.value = f"<pre>{html.escape(str(exc))}</pre>"
                self.cancel_button.disabled = False
                self.cancel_button.description = "Cancel"
                return False
        from jupyter_pipeline.runners.local import cancel_run

        return cancel_run(self._store, self.run_id)

    def close(self) -> None:
        """Stop following and close the widgets."""
        stop = getattr(self, "_stop", None)  # None: __init__ refused the run id
        if stop is not None:
            stop.set()
        super().close()

    # ------------------------------------------------------------------ drawing

    def _draw(self, run: Run, now: float) -> None:
        name = html.escape(Path(run.notebook).name)
        params = ", ".join(f"{k}={v!r}" for k, v in run.parameters.items())
        link = (
            f' · <a href="{html.escape(run.url)}" target="_blank">open in Kubeflow</a>'
            if run.url
            else ""
        )
        self.header.value = (
            f"<b>run {run.id}</b> · {name} · {_badge(run.state.value)} · "
            f"{_duration(_elapsed(run.started, run.finished, now))}"
            + (f" · <code>{html.escape(params)}</code>" if params else "")
            + link
        )
        rows = []
        for s in run.steps:
            took = None if s.state is RunState.cached else _elapsed(s.started, s.finished, now)
            tries = str(s.attempts) if s.attempts > 1 else ""
            rows.append(
                f'<tr data-step="{html.escape(s.step)}"><td>{html.escape(s.step)}</td>'
                f"<td>{_badge(s.state.value)}</td>"
                f"<td style='text-align:right'>{_duration(took)}</td>"
                f"<td style='text-align:right'>{tries}</td></tr>"
            )
        self.steps_html.value = (
            "<table class='jp-pipeline-steps'><thead><tr><th>step</th><th>state</th>"
            "<th>duration</th><th>attempts</th></tr></thead><tbody>"
            + "".join(rows)
            + "</tbody></table>"
        )
        failed = [s for s in run.steps if s.state is RunState.failed]
        if failed:
            s = failed[0]
            where = f" (cell {s.error_cell})" if s.error_cell is not None else ""
            tail = "\n".join(self.log_tail(s.step))
            self.error_html.value = (
                f"<div style='color:{STATE_COLOURS['failed']}'><b>{html.escape(s.step)} "
                f"failed{where}</b>: {html.escape(s.error or '')}</div>"
                + (f"<pre>{html.escape(tail)}</pre>" if tail else "")
            )
        elif run.error and run.state.finished and run.state is not RunState.succeeded:
            self.error_html.value = f"<div>{html.escape(run.error)}</div>"
        else:
            self.error_html.value = ""
        logs = []
        for s in run.steps:
            if s.state is RunState.running:
                lines = self.log_tail(s.step)
                logs.append(
                    f"<div><b>{html.escape(s.step)}</b></div>"
                    f"<pre style='margin:0 0 4px 0'>{html.escape(chr(10).join(lines))}</pre>"
                )
        self.logs_html.value = "".join(logs)
        finished = run.state.finished
        self.cancel_button.layout.display = "none" if finished else None
        if finished:
            self.cancel_button.disabled = True


def monitor(
    run_id: str, *, store: RunStore | str | Path | None = None, interval: float = 0.3
) -> RunMonitor:
    """Attach a live monitor to an existing run (started here, by the CLI or the sidebar).

    Raises:
        PipelineError: No such run (or the prefix is ambiguous).
    """
    return RunMonitor(run_id, store=store, interval=interval)


def run(
    notebook: str | Path,
    /,
    *,
    parameters: Mapping[str, Any] | None = None,
    target: str = "local",
    max_parallel: int | None = None,
    cache: bool = True,
    split: SplitMode = "tags",
    store: RunStore | str | Path | None = None,
    **params: Any,
) -> RunMonitor:
    """Start a run of ``notebook`` in its own runner process and return its live monitor.

    Args:
        notebook: The notebook's path (relative to this kernel's working directory).
        parameters: Parameter values (use this for a parameter named like an option below).
        target: ``local`` (default) or ``kfp``.
        max_parallel: Steps running at once (local; default: CPU count).
        cache: Reuse results of unchanged steps (local).
        split: How to split a notebook without step tags: ``tags``, ``headings``, ``cells``.
        store: A :class:`RunStore` or its database path (default: the CLI's store).
        **params: Parameter values, e.g. ``run("nb.ipynb", lr=0.1)``.

    Raises:
        PipelineError: The notebook cannot run (error diagnostics with their cell, unknown or
            mistyped parameter, missing kernel, unreachable cluster).
    """
    from jupyter_pipeline.notebook import NotebookError
    from jupyter_pipeline.runners.launch import KfpLauncher, LaunchError, LocalLauncher, launch

    db = store if isinstance(store, RunStore) else RunStore(store)
    values = {**(parameters or {}), **params}
    launcher: LocalLauncher | KfpLauncher
    if target == "local":
        launcher = LocalLauncher(db, max_parallel=max_parallel, cache=cache)
    elif target == "kfp":
        launcher = KfpLauncher(db)
    else:
        raise PipelineError(f"unknown target {target!r}: use 'local' or 'kfp'")
    try:
        started = launch(db, notebook, parameters=values, split=split, launcher=launcher)
    except (LaunchError, NotebookError) as exc:
        raise PipelineError(str(exc)) from None
    return RunMonitor(started.id, store=db)
