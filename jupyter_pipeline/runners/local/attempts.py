"""One attempt of a step: its worker thread, and what the scheduler does with its result.

:meth:`_Attempts.launch` starts a worker thread that runs the step runtime (warming: the
kernel boots and waits in ``ready()`` for its slot and inputs). Workers talk back through
the run's message queue only: ``kernel`` (its pid), ``saved`` (its outputs exist, so its
dependents may start) and ``done`` (the kernel is gone); :meth:`_Attempts.handle` turns
each into state changes on the scheduler's thread: success, retry, failure, or a clean
stop of the notebook (``sys.exit()``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.local.keys import _KeyedExecution
from jupyter_pipeline.runners.local.nodes import (
    _DONE,
    _DRAINING,
    _EXECUTING,
    _NICE,
    _WAITING,
    _WARMING,
    _WATCH,
    _Aborted,
    _describe_failure,
    _Node,
)
from jupyter_pipeline.runtime.api import SavedValue, StepRequest, StepResult
from jupyter_pipeline.runtime.execute import read_outputs
from jupyter_pipeline.store import kill_process_tree, process_started

log = logging.getLogger("jupyter_pipeline.runners.local")


class _Attempts(_KeyedExecution):
    """A run's state, with the launching of step attempts and the handling of their ends."""

    def launch(self, node: _Node, *, warm: bool) -> None:
        """Start a worker thread for one attempt of ``node``."""
        out_dir = node.dir / "outputs"
        if out_dir.exists():
            shutil.rmtree(out_dir, ignore_errors=True)  # a retry starts from a clean slate
        out_dir.mkdir(parents=True, exist_ok=True)
        node.go.clear()
        node.abort = None
        if warm:
            node.phase = _WARMING
            self.emit("warming", node.step.name)
        else:
            node.phase = _EXECUTING
            node.attempts += 1
            self.mark_running(node)
        request = StepRequest(
            step_notebook=node.step_nb,
            step=node.step.name,
            source_notebook=str(self.source_path),
            inputs={} if warm else dict(node.inputs),
            parameters=self.injected_parameters(node.step),
            output_dir=str(out_dir),
            outputs=node.outputs,
            executed_notebook=str(node.dir / "executed.ipynb"),
            html=self.runner.html,
            cwd=str(self.source_path.parent),
            kernel_name=self.pipeline.kernel_name,
            log_path=str(node.dir / "log.txt"),
            env=self.step_env(node),
        )

        # The default runtime reports the saved outputs itself (right after the save cell);
        # another one is watched for them.
        reports = self.runner._run_step is None
        stop_watch = threading.Event()
        watcher = threading.Thread(
            target=self.watch_outputs,
            args=(node, out_dir, stop_watch),
            name=f"watch-{node.step.name}",
            daemon=True,
        )

        def ready() -> dict[str, str]:
            node.go.wait()
            if node.abort is not None or self.cancelled.is_set():
                raise _Aborted(node.abort or "cancelled")
            if not reports:
                watcher.start()
            return dict(node.inputs)

        def on_saved(saved: list[SavedValue], metrics: dict[str, Any]) -> None:
            self.messages.put(("saved", node, (saved, metrics)))

        def on_kernel(pid: int) -> None:
            node.kernel_pid = pid
            node.kernel_created = process_started(pid)
            if not node.critical and self.runner.prewarm:
                # Off the longest chain: when kernels compete for the CPU, the critical path
                # should win. Niceness only matters under contention; it costs nothing else.
                with contextlib.suppress(OSError):
                    os.setpriority(os.PRIO_PROCESS, pid, _NICE)
            if self.cancelled.is_set():
                kill_process_tree(pid)
            self.messages.put(("kernel", node, pid))

        fork_server = self.get_fork_server()
        extra: dict[str, Any] = {"fork_server": fork_server} if fork_server is not None else {}
        run_step = self.run_step
        if reports:
            extra["on_saved"] = on_saved
            step_server = self.get_step_server()
            if step_server is not None and step_server.ready():
                run_step = step_server.run_step  # else in this thread, until it is

        def work() -> None:
            if not warm and not reports:
                watcher.start()
            try:
                result: Any = run_step(
                    request, ready=ready if warm else None, on_kernel=on_kernel, **extra
                )
            except BaseException as exc:
                result = exc
            stop_watch.set()
            if watcher.is_alive():
                watcher.join()  # so "saved" always comes before "done"
            self.messages.put(("done", node, result))

        node.thread = threading.Thread(target=work, name=f"step-{node.step.name}", daemon=True)
        node.thread.start()

    def watch_outputs(self, node: _Node, out_dir: Path, stop: threading.Event) -> None:
        """Report a step's outputs as soon as its save cell has written them.

        The save cell is the step's last; once its record (``outputs.json``, and
        ``metrics.json`` for a metrics step) is complete, the step's results exist.
        Dependents can start then, instead of after the kernel's shutdown and papermill's
        final notebook write, which are off the critical path this way.
        """
        from jupyter_pipeline.runtime.kernel import METRICS_FILE, OUTPUTS_FILE

        records_path = out_dir / OUTPUTS_FILE
        metrics_path = out_dir / METRICS_FILE if node.step.metrics else None
        while not stop.wait(_WATCH):
            if not records_path.exists() or (metrics_path and not metrics_path.exists()):
                continue
            try:
                # Parsing fails while a file is half written: a truncated JSON list is invalid.
                saved, metrics = read_outputs(str(out_dir))
            except (OSError, ValueError, KeyError, TypeError):
                continue
            self.messages.put(("saved", node, (saved, metrics)))
            return

    def handle(self, kind: str, node: _Node, payload: Any) -> None:
        if kind == "kernel":
            self.store.update_step(
                self.run_id, node.step.name, kernel_pid=payload, kernel_created=node.kernel_created
            )
            return
        if kind == "saved":
            if node.phase == _EXECUTING and not self.cancelled.is_set():
                self.outputs_saved(node, *payload)
            return
        # kind == "done": the kernel is gone
        self.warn_fork_fallback(node, payload)
        try:
            self.attempt_done(node, payload)
        finally:
            if node.phase != _EXECUTING:  # not retried (a retry keeps its devices)
                self.give_back_gpus(node)

    def warn_fork_fallback(self, node: _Node, payload: Any) -> None:
        """Say, once per run, why a kernel was spawned rather than forked (a slower start).

        The step's own log says it too (written where the kernel started). A warning on the
        runner's log (stderr: runner.log for a background run), so a slow run explains
        itself.
        """
        reason = getattr(payload, "fork_fallback", None)
        if reason and not self.fork_fallback_warned:
            self.fork_fallback_warned = True
            log.warning(
                "run %s: step %s's kernel was spawned, not forked (a slower start): %s",
                self.run_id,
                node.step.name,
                reason,
            )

    def attempt_done(self, node: _Node, payload: Any) -> None:
        node.kernel_pid = None
        if node.phase == _DONE:
            return  # aborted while warming (skipped or cached): already recorded
        if self.cancelled.is_set() and node.phase != _DRAINING:
            return  # finish_cancel records it
        if node.phase == _WARMING:
            # It ended before being given its inputs (its imports failed, say). Whether that
            # counts is decided once its dependencies are done: run it again then, directly.
            node.phase = _WAITING
            node.warm_failed = True
            return
        result: StepResult | None = payload if isinstance(payload, StepResult) else None
        if result is not None and result.status == "succeeded":
            if result.stopped_at is not None:
                self.stop(node, result)
            else:
                self.succeed(node, result)
            return
        error, cell = _describe_failure(node.step.name, payload)
        if node.attempts <= node.step.settings.retries and node.phase != _DRAINING:
            self.store.update_step(self.run_id, node.step.name, error=f"retrying: {error}")
            self.launch(node, warm=False)
            return
        node.phase = _DONE
        if node.claimed and self.runner.flights is not None and node.cache_key is not None:
            self.runner.flights.fail(node.cache_key, (self.run_id, error, cell))
        self.release(node)
        fields: dict[str, Any] = {}
        if result is not None:
            fields["executed_notebook"] = result.executed_notebook
            node.executed_notebook = result.executed_notebook
            if result.html:
                fields["html"] = result.html
        self.set_step(
            node,
            state=RunState.failed,
            finished=time.time(),
            error=error,
            error_cell=cell,
            **fields,
        )

    def outputs_saved(self, node: _Node, saved: list[SavedValue], metrics: dict[str, Any]) -> None:
        """The step's outputs exist: it has succeeded, its dependents may start."""
        node.saved = {v.name: v for v in saved}
        node.phase = _DRAINING
        self.set_step(
            node,
            state=RunState.succeeded,
            finished=time.time(),
            **node.saved_fields(),
            metrics=metrics,
            cache_key=node.cache_key,
            error=None,
        )

    def succeed(self, node: _Node, result: StepResult) -> None:
        drained = node.phase == _DRAINING
        node.saved = {v.name: v for v in result.outputs}
        node.executed_notebook = result.executed_notebook
        missing = [o for o in node.outputs if o not in node.saved]
        if self.cacheable(node) and not missing and node.cache_key is not None:
            self.runner.cache.put(
                node.cache_key,
                output_dir=node.dir / "outputs",
                outputs=result.outputs,
                metrics=result.metrics,
                executed_notebook=result.executed_notebook,
                log=node.dir / "log.txt",
                parts=node.key_parts,
            )
        self.release(node)
        node.phase = _DONE
        if drained:  # already recorded as succeeded when its outputs appeared
            self.set_step(node, executed_notebook=result.executed_notebook, html=result.html)
            return
        self.set_step(
            node,
            state=RunState.succeeded,
            finished=time.time(),
            executed_notebook=result.executed_notebook,
            html=result.html,
            **node.saved_fields(),
            metrics=result.metrics,
            cache_key=node.cache_key,
            error=None,
        )

    def stop(self, node: _Node, result: StepResult) -> None:
        """A step ended the notebook cleanly (``sys.exit()``, ``raise SystemExit``).

        As papermill does, that run succeeds and nothing after the stopping cell runs: the
        step counts as succeeded (not cached: it saved nothing), and every step later in
        notebook order that has not finished is skipped (a running one is killed).
        """
        assert result.stopped_at is not None
        cell = result.stopped_at
        why = (
            f"the notebook stopped at cell {cell}"
            if cell >= 0
            else f"the notebook stopped in step {node.step.name}"
        )
        if self.stopped is None or (0 <= cell < self.stopped[0]):
            self.stopped = (cell, why)
        node.phase = _DONE
        node.executed_notebook = result.executed_notebook
        self.set_step(
            node,
            state=RunState.succeeded,
            finished=time.time(),
            executed_notebook=result.executed_notebook,
            html=result.html,
            error=None,
        )
        for other in self.nodes.values():
            if other.index <= node.index or other.phase in (_DONE, _DRAINING):
                continue
            if other.phase == _WARMING:
                self.abort(other, "skipped")
            elif other.phase == _EXECUTING and other.kernel_pid:
                kill_process_tree(other.kernel_pid, other.kernel_created)
            was_running = other.phase == _EXECUTING
            other.phase = _DONE
            self.stop_skips.add(other.step.name)
            self.set_step(
                other,
                state=RunState.skipped,
                finished=time.time() if was_running else None,
                error=why,
            )
