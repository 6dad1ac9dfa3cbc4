"""The scheduling loop of one local run: what runs next, and how the run ends.

:class:`_Execution` is the whole run in progress (its state, keys and attempts come from
the modules it builds on). Its loop, on the thread that called
:meth:`~jupyter_pipeline.runners.local.LocalRunner.run`, owns all state: it skips steps
whose upstream failed, serves cache hits, gives execution slots (ready warm steps first,
then the longest chain ahead), pre-warms kernels, handles the workers' messages, polls the
store's cancel flag, and at the end records the outcome and writes the merged notebook.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat

from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.local.attempts import _Attempts
from jupyter_pipeline.runners.local.nodes import (
    _DONE,
    _DRAINING,
    _EXECUTING,
    _FINISHED_OK,
    _POLL,
    _WAITING,
    _WARMING,
    _Node,
)
from jupyter_pipeline.store import kill_process_tree


class _Execution(_Attempts):
    """One run in progress: the scheduler's loop, and the run's end (done or cancelled)."""

    # ------------------------------------------------------------------ the loop

    def loop(self) -> None:
        self.store.update_run(self.run_id, state=RunState.running)
        self.emit("run")
        last_poll = 0.0
        while True:
            if not self.cancelled.is_set():
                self.schedule()
            if all(n.phase == _DONE for n in self.nodes.values()):
                break
            if self.cancelled.is_set() and not self.cancel_done:
                self.finish_cancel()
                break
            timeout = _POLL
            if self.pending_events:
                timeout = max(0.0, min(timeout, self.flush_due - time.monotonic()))
            try:
                kind, node, payload = self.messages.get(timeout=timeout)
            except queue.Empty:
                pass
            else:
                self.handle(kind, node, payload)
            now = time.monotonic()
            if self.pending_events and now >= self.flush_due:
                self.flush_events()
            if now - last_poll >= _POLL:
                last_poll = now
                if self.store.cancel_requested(self.run_id):
                    self.request_cancel()
        for node in self.nodes.values():
            self.release(node)

    def schedule(self) -> None:
        """Skip, serve from cache, promote warm steps, launch, pre-warm — until stable."""
        changed = True
        while changed:
            changed = False
            for node in self.nodes.values():
                if node.phase in (_DONE, _DRAINING, _EXECUTING):
                    continue
                deps = self.deps_state(node)
                if deps == "bad":
                    self.skip(node)
                    changed = True
                elif deps == "ok" and not node.resolved:
                    self.resolve_inputs(node)
                    node.resolved = True
                    # A cache:disabled step's key would never be used: its data files are
                    # not hashed (a big file read by such a step costs nothing more).
                    if self.cacheable(node):
                        node.cache_key = self.key(node)
                    if self.try_cache(node) or self.claim(node):
                        changed = True
                elif node.held and (self.try_cache(node) or self.claim(node)):
                    changed = True
        executing, warming = self.counts()
        ready = [
            n
            for n in self.nodes.values()
            if n.phase in (_WAITING, _WARMING) and not n.held and self.deps_state(n) == "ok"
        ]
        # Warm ones first (their kernel is up), then the longest chain ahead, then notebook order.
        ready.sort(key=lambda n: (n.phase != _WARMING, -n.rank, n.index))
        for node in ready:
            if executing >= self.runner.max_parallel:
                break
            if node.phase == _WAITING and not self.take_gpus(node):
                continue  # its GPUs are all in use: it waits, others may go
            executing += 1
            if node.phase == _WARMING:
                warming -= 1
                self.grant(node)
            else:
                self.launch(node, warm=False)
        if not self.runner.prewarm:
            return
        for node in sorted(self.nodes.values(), key=lambda n: (-n.rank, n.index)):
            if warming >= self.runner.prewarm_limit:
                break
            # A GPU step is not warmed: its kernel must start with its device chosen.
            if node.phase != _WAITING or node.warm_failed or node.held or node.gpus:
                continue
            # Critical path first, and only steps whose dependencies are all under way
            # (warming included, so a chain warms several steps ahead), or ready steps that
            # wait for a slot.
            if all(self.nodes[d].phase != _WAITING for d in node.deps) and (
                self.deps_state(node) != "bad"
            ):
                warming += 1
                self.launch(node, warm=True)

    def skip(self, node: _Node) -> None:
        bad = [d for d in node.deps if self.nodes[d].state.finished]
        bad = [d for d in bad if self.nodes[d].state not in _FINISHED_OK]
        self.end_early(node, "skipped")
        self.set_step(
            node,
            state=RunState.skipped,
            error=f"upstream step {', '.join(bad)} did not succeed" if bad else None,
        )

    def grant(self, node: _Node) -> None:
        """Give a warming step its execution slot and its inputs."""
        node.phase = _EXECUTING
        node.attempts = 1
        self.mark_running(node)
        node.go.set()

    # ------------------------------------------------------------------ cancel & finish

    def request_cancel(self) -> None:
        """Ask the loop to stop everything (safe from signal handlers and other threads)."""
        # Only flags here: this may run in a signal handler. The loop does the killing.
        self.cancelled.set()
        for node in self.nodes.values():
            node.go.set()  # warming kernels stop waiting for inputs

    def finish_cancel(self) -> None:
        """Kill every kernel, wait for the workers, record cancelled states."""
        if self.cancel_done:
            return
        self.cancel_done = True
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.kernel_pid:
                    kill_process_tree(node.kernel_pid, node.kernel_created)
            alive = [n for n in self.nodes.values() if n.thread and n.thread.is_alive()]
            if not alive:
                break
            with contextlib.suppress(queue.Empty):
                kind, node, payload = self.messages.get(timeout=0.1)
                if kind == "kernel":
                    self.store.update_step(
                        self.run_id,
                        node.step.name,
                        kernel_pid=payload,
                        kernel_created=node.kernel_created,
                    )
        now = time.time()
        for node in self.nodes.values():
            self.release(node)
            self.give_back_gpus(node)
            if node.phase == _DRAINING:  # its outputs were saved: it did succeed
                node.phase = _DONE
                continue
            if node.phase != _DONE:
                was_running = node.phase == _EXECUTING
                node.phase = _DONE
                self.set_step(
                    node,
                    state=RunState.cancelled,
                    finished=now if was_running else None,
                    error="cancelled",
                )
        self.store.update_run(
            self.run_id, state=RunState.cancelled, finished=now, error="cancelled"
        )
        self.emit("run")

    def outcome(self) -> tuple[RunState, str | None] | None:
        """The run's final state and error once the loop is done (None: cancelled, recorded)."""
        if self.cancel_done:
            return None
        states = [n.state for n in self.nodes.values()]
        failed = [n.step.name for n in self.nodes.values() if n.state is RunState.failed]
        if failed:
            state, error = RunState.failed, f"step {', '.join(failed)} failed"
        elif all(
            s in _FINISHED_OK or (s is RunState.skipped and n.step.name in self.stop_skips)
            for n, s in zip(self.nodes.values(), states, strict=True)
        ):
            state, error = RunState.succeeded, None
        else:
            state, error = RunState.failed, "some steps did not run"
        return state, error

    def record_outcome(self, state: RunState, error: str | None) -> None:
        """Record the run's final state in the store and tell the listeners."""
        self.store.update_run(self.run_id, state=state, finished=time.time(), error=error)
        self.emit("run")

    def write_merged(
        self,
        output: Path,
        merge_outputs: Callable[..., Any],
        outcome: tuple[RunState, str | None] | None = None,
    ) -> None:
        """Write the source notebook with each cell's outputs from its executed step.

        ``outcome`` is the final state not yet in the store (it is recorded after this).
        """
        executed = {}
        for name, node in self.nodes.items():
            # A step cancelled while running has no recorded notebook, but its runtime saved
            # the cells it ran (the interrupted one included) before the kernel went.
            path = node.executed_notebook or str(node.dir / "executed.ipynb")
            if Path(path).exists():
                executed[name] = nbformat.read(path, as_version=4)
        run = self.store.get_run(self.run_id)
        record = {
            "run_id": self.run_id,
            "pipeline": self.pipeline.name,
            "source_notebook": str(self.source_path),
            "state": (outcome[0] if outcome else run.state).value,
            "parameters": self.parameters,
            "steps": {
                s.step: {"state": s.state.value, **({"error": s.error} if s.error else {})}
                for s in run.steps
            },
        }
        merged = merge_outputs(
            self.source_nb,
            executed,
            parameters=self.overrides,
            run=record,
            stopped_at=self.stopped[0] if self.stopped else None,
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.absolute() == self.source_path:
            raise ValueError(f"{output}: refusing to overwrite the source notebook")
        nbformat.write(merged, str(output))
