"""The state of one local run in progress, and the bookkeeping every part of it uses.

:class:`_ExecutionState` holds what the scheduler knows about a run (its nodes, the message
queue from the step workers, the fork and step servers, cancellation, pending progress
events) and the small operations on it: building the nodes from the pipeline, recording a
step's state, resolving inputs, GPUs and environment. The scheduling loop
(:mod:`.execution`), the step attempts (:mod:`.attempts`) and the cache keys (:mod:`.keys`)
build on it, each in its own module.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat

from jupyter_pipeline.model import Pipeline, RunState, Step
from jupyter_pipeline.runners.base import EventCallback, RunEvent
from jupyter_pipeline.runners.local.nodes import (
    _DONE,
    _EMIT_EVERY,
    _EXECUTING,
    _FINISHED_OK,
    _MAY_STOP,
    _WARMING,
    _as_dict,
    _Node,
)
from jupyter_pipeline.runners.prewarm import add_preimports, fork_preimports
from jupyter_pipeline.runtime.api import StepResult
from jupyter_pipeline.runtime.kernel import state_key

if TYPE_CHECKING:
    from jupyter_pipeline.runners.local.runner import LocalRunner


class _ExecutionState:
    """One run in progress: the scheduler's state and its bookkeeping."""

    def __init__(
        self,
        *,
        runner: LocalRunner,
        pipeline: Pipeline,
        run_id: str,
        run_dir: Path,
        source_path: Path,
        source_nb: nbformat.NotebookNode,
        parameters: dict[str, Any],
        run_step: Callable[..., StepResult],
        on_event: EventCallback | None,
        overrides: dict[str, Any] | None = None,
    ):
        self.runner = runner
        self.store = runner.store
        self.pipeline = pipeline
        self.run_id = run_id
        self.run_dir = run_dir
        self.source_path = source_path
        self.source_nb = source_nb
        self.parameters = parameters
        self.overrides = overrides or {}  # as given (type-checked): what papermill records
        self.run_step = run_step
        self.on_event = on_event
        self.nodes: dict[str, _Node] = {}
        self.messages: queue.Queue[tuple[str, _Node, Any]] = queue.Queue()
        self.fork_server: Any = None  # started with the first kernel (runtime.forkserver)
        self.fork_server_shared = False  # the runner's (a sweep's), not this run's own
        self.fork_fallback_warned = False  # a spawned kernel's reason was logged (once a run)
        self.step_server: Any = None  # drivers of the steps (runtime.stepserver), if used
        self.step_server_asked = False
        self.cancelled = threading.Event()
        self.cancel_done = False
        self.started: float | None = None
        # Set when a step ended the notebook cleanly (sys.exit()): the source cell (-1 if
        # not a user cell) and the reason later steps are skipped with.
        self.stopped: tuple[int, str] | None = None
        self.stop_skips: set[str] = set()  # steps skipped because the notebook stopped
        self.pending_events: list[tuple[str, str | None]] = []
        self.gpu_needs: dict[str, int] = {}
        self.flush_due = 0.0

    # ------------------------------------------------------------------ setup

    def build_nodes(self, build_step_notebook: Callable[..., Any]) -> None:
        names = {s.name for s in self.pipeline.steps}
        for i, step in enumerate(self.pipeline.steps):
            nb = _as_dict(build_step_notebook(self.source_nb, self.pipeline, step.name))
            if self.runner.prewarm:
                nb = add_preimports(nb)
            d = self.run_dir / "steps" / step.name
            d.mkdir(parents=True, exist_ok=True)
            deps = [dep for dep in step.depends_on if dep in names and dep != step.name]
            for src in [*step.input_sources.values(), *step.state_inputs.values()]:
                if src in names and src not in deps and src != step.name:
                    deps.append(src)  # a data source is always a dependency, tagged or not
            gpus = self.gpu_needs.get(step.name, 0)
            self.nodes[step.name] = _Node(
                step=step, index=i, deps=deps, step_nb=nb, dir=d, gpus=gpus
            )
        stoppers: list[str] = []
        for step in self.pipeline.steps:
            self.nodes[step.name].guards = [
                s for s in stoppers if s not in self.nodes[step.name].deps
            ]
            if any(_MAY_STOP.search(self._cell_source(c)) for c in step.cells):
                stoppers.append(step.name)
        # Longest remaining chain, computed from the end (steps come in notebook order, and
        # a step only depends on earlier ones).
        for node in reversed(list(self.nodes.values())):
            for dep in node.deps:
                self.nodes[dep].rank = max(self.nodes[dep].rank, node.rank + 1)
        for node in self.nodes.values():
            node.depth = 1 + max((self.nodes[d].depth for d in node.deps), default=0)
        longest = max((n.depth + n.rank for n in self.nodes.values()), default=0)
        for node in self.nodes.values():
            node.critical = node.depth + node.rank == longest

    def _cell_source(self, index: int) -> str:
        cell = self.source_nb.cells[index] if index < len(self.source_nb.cells) else {}
        if cell.get("cell_type") != "code":
            return ""
        source = cell.get("source", "")
        return "".join(source) if isinstance(source, list) else source

    def fork_modules(self) -> list[str]:
        """What the fork server pre-imports: the top-level imports of every step's code."""
        sources: list[str] = []
        for step in self.pipeline.steps:
            sources += [d.source for d in step.definitions]
            for index in step.cells:
                cell = self.source_nb.cells[index] if index < len(self.source_nb.cells) else {}
                if cell.get("cell_type") == "code":
                    source = cell.get("source", "")
                    sources.append("".join(source) if isinstance(source, list) else source)
        return fork_preimports(sources)

    def get_fork_server(self) -> Any:
        """The run's fork server (started on first use), or None when kernels are spawned."""
        if self.fork_server is None and self.runner.fork:
            from jupyter_pipeline.runtime import forkserver

            if not forkserver.supported():
                self.runner.fork = False
            elif self.runner.shared_fork_servers is not None:
                # A sweep's trials: the same kernels, one fork server (not one per trial).
                self.fork_server = self.runner.shared_fork_server(
                    str(self.source_path.parent), self.fork_modules()
                )
                self.fork_server_shared = True
            else:
                self.fork_server = forkserver.ForkServer(
                    str(self.source_path.parent), modules=self.fork_modules()
                )
                self.fork_server.start()
        return self.fork_server

    def get_step_server(self) -> Any:
        """The runner's step-driver server (acquired on first use), or None."""
        if not self.step_server_asked:
            self.step_server_asked = True
            self.step_server = self.runner._acquire_step_server()
        return self.step_server

    def close_fork_server(self) -> None:
        """Stop the fork server (and any kernel of it still alive) — unless it is shared
        (a sweep's: its other trials go on forking from it; the sweep closes it)."""
        if self.fork_server is not None and not self.fork_server_shared:
            self.fork_server.close()

    # ------------------------------------------------------------------ helpers

    def emit(self, kind: str, step: str | None = None) -> None:
        """Queue a progress event; run-level ones (start, end) go out at once with the rest."""
        if self.on_event is None:
            return
        if not self.pending_events:
            self.flush_due = time.monotonic() + _EMIT_EVERY
        self.pending_events.append((kind, step))
        if kind == "run":
            self.flush_events()

    def flush_events(self) -> None:
        """Hand the queued events to on_event, all with one fresh read of the run."""
        if self.on_event is None or not self.pending_events:
            return
        events, self.pending_events = self.pending_events, []
        run = self.store.get_run(self.run_id)
        for kind, step in events:
            with contextlib.suppress(Exception):  # a progress display must never break a run
                self.on_event(RunEvent(kind=kind, run=run, step=step))  # type: ignore[arg-type]

    def set_step(self, node: _Node, **fields: Any) -> None:
        if "state" in fields:
            node.state = fields["state"]
        self.store.update_step(self.run_id, node.step.name, **fields)
        self.emit("step", node.step.name)

    def injected_parameters(self, step: Step) -> dict[str, Any]:
        """Values injected into a step: the parameters it reads (its parameters cell holds
        only those, so they are also all that can change its results)."""
        return {name: self.parameters[name] for name in step.parameters if name in self.parameters}

    def deps_state(self, node: _Node) -> str:
        """``ok`` (all done), ``bad`` (one failed/skipped/cancelled) or ``pending``."""
        # Called for every waiting step at every scheduling pass: one loop, no lists.
        pending = False
        for dep in node.deps:
            state = self.nodes[dep].state
            if state in _FINISHED_OK:
                continue
            if state.finished:
                return "bad"
            pending = True
        if pending or any(not self.nodes[g].state.finished for g in node.guards):
            return "pending"
        return "ok"

    def resolve_inputs(self, node: _Node) -> None:
        """Map each input to the directory its producer saved it in (deps are all done)."""
        step = node.step
        inputs: dict[str, str] = {}
        digests: dict[str, str] = {}
        wanted = [(v, step.input_sources.get(v)) for v in step.inputs]
        wanted += [(state_key(k), src) for k, src in step.state_inputs.items()]
        for key, src in wanted:
            producers = [src] if src in self.nodes else []
            producers += [d for d in reversed(node.deps) if d not in producers]
            for p in producers:
                saved = self.nodes[p].saved.get(key)
                if saved is not None:
                    inputs[key] = saved.path
                    digests[key] = saved.digest
                    break
        node.inputs, node.input_digests = inputs, digests

    def counts(self) -> tuple[int, int]:
        executing = sum(1 for n in self.nodes.values() if n.phase == _EXECUTING)
        warming = sum(1 for n in self.nodes.values() if n.phase == _WARMING)
        return executing, warming

    def take_gpus(self, node: _Node) -> bool:
        """Give a GPU step its devices (False: not enough free now). Others need none."""
        if node.gpus <= 0 or node.devices is not None:
            return True
        node.devices = self.runner.gpu_pool.take(node.gpus)
        return node.devices is not None

    def give_back_gpus(self, node: _Node) -> None:
        """The step's kernel is gone: its devices are free again."""
        if node.devices:
            self.runner.gpu_pool.give(node.devices)
        node.devices = None

    def step_env(self, node: _Node) -> dict[str, str]:
        """The kernel's extra environment: the step's own, and the devices it may use."""
        env = dict(node.step.settings.env)
        if node.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(node.devices)
        elif node.gpus < 0:
            env["CUDA_VISIBLE_DEVICES"] = ""  # --allow-cpu: the devices it cannot have hidden
        return env

    def end_early(self, node: _Node, why: str) -> None:
        """Mark a step done without (more of) its own run: ``why`` it ends (skipped,
        cached) stops its kernel if it was warming."""
        if node.phase == _WARMING:
            self.abort(node, why)
        node.phase = _DONE

    def abort(self, node: _Node, why: str) -> None:
        """Stop a warming step: its ready() raises, the runtime shuts its kernel down."""
        node.abort = why
        node.go.set()

    def run_started(self, now: float) -> None:
        """Record the run's start time at its first step that runs or is served from cache."""
        if self.started is None:
            self.started = now
            self.store.update_run(self.run_id, started=now)

    def mark_running(self, node: _Node) -> None:
        now = time.time()
        self.run_started(now)
        self.set_step(
            node,
            state=RunState.running,
            started=now,
            finished=None,
            attempts=node.attempts,
            log_path=str(node.dir / "log.txt"),
            executed_notebook=str(node.dir / "executed.ipynb"),
            error=None,
            error_cell=None,
        )
