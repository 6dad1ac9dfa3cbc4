"""LocalRunner: run a pipeline's steps as fresh kernels on this machine, in parallel.

Scheduling model. One scheduler loop (the thread that called :meth:`LocalRunner.run`) owns
all state; each step attempt runs :func:`jupyter_pipeline.runtime.run_step` in a worker
thread that talks back through a queue. Two separate budgets:

* **execution slots** (``max_parallel``): steps whose inputs are ready and that are running
  their own cells. A step is only ever *given* a slot when its dependencies are done.
* **warming kernels** (``prewarm_limit``): steps started early, whose kernel boots and runs
  parameters and definitions (imports, functions) while their dependencies still run; they
  then block in ``ready()`` until the scheduler gives them a slot and their inputs.

Warming kernels never hold an execution slot, so they cannot keep a ready step from running;
when a slot frees, a warm step that has become ready goes first (its kernel is already up).

Kernels are forked from a per-run fork server (:mod:`jupyter_pipeline.runtime.forkserver`)
whose zygote has imported ipykernel and the libraries the steps import, when that is
faithful (else spawned as usual); ``fork=False`` always spawns.

Every state change is written to the run store at once, so ``show``/the sidebar (other
processes) see progress live and a killed runner loses nothing already recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from jupyter_pipeline.model import Pipeline, Run, RunState, Step
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.base import EventCallback, RunEvent, resolve_parameters
from jupyter_pipeline.runners.cache import StepCache, default_cache_dir, files_read, step_code
from jupyter_pipeline.runners.gpus import GpuPool, check_gpus, detect_gpus, gpus_wanted
from jupyter_pipeline.runners.prewarm import add_preimports, fork_preimports
from jupyter_pipeline.runtime.api import SavedValue, StepRequest, StepResult
from jupyter_pipeline.runtime.execute import read_outputs
from jupyter_pipeline.runtime.kernel import state_key
from jupyter_pipeline.store import RunStore, kill_process_tree, process_alive, process_started

__all__ = ["KeyFlights", "LocalRunner"]

_FINISHED_OK = (RunState.succeeded, RunState.cached)
_POLL = 0.25  # seconds between checks of the store's cancel flag while waiting
# Progress events are handed to on_event in batches, this long after the first of a batch
# (a live display refreshes 4 times a second). Each batch reads the run from the store once:
# per event, that read grew with the number of steps and was the scheduler's largest cost.
_EMIT_EVERY = 0.2


class _Aborted(Exception):
    """Raised from ``ready()`` to stop a warming step (cancelled, skipped or cache hit)."""


# Node phases, beyond the final RunState.
# "draining": the step's outputs are saved (it counts as succeeded and frees its slot), its
# kernel is shutting down and papermill is writing the executed notebook.
_WAITING, _WARMING, _EXECUTING, _DRAINING, _DONE = (
    "waiting",
    "warming",
    "executing",
    "draining",
    "done",
)
# A cell that may end the notebook cleanly (papermill: sys.exit(), sys.exit(0), raise
# SystemExit); later steps wait for its step, so nothing after a stop runs.
_MAY_STOP = re.compile(r"\bSystemExit\b|\b(?:sys\.)?exit\s*\(|\bquit\s*\(")
_WATCH = 0.01  # seconds between looks for a running step's saved outputs
_NICE = 5  # CPU niceness of kernels of steps off the critical path


@dataclass
class _Node:
    step: Step
    index: int
    deps: list[str]
    step_nb: dict[str, Any]
    dir: Path
    phase: str = _WAITING
    rank: int = 1  # steps on the longest chain from here to the end (critical path first)
    depth: int = 1  # steps on the longest chain from a start to here
    critical: bool = True  # on a longest chain through the pipeline
    state: RunState = RunState.queued
    attempts: int = 0
    kernel_pid: int | None = None
    kernel_created: float | None = None
    warm_failed: bool = False  # its warm-up failed: launch it only once its inputs are ready
    go: threading.Event = field(default_factory=threading.Event)
    abort: str | None = None  # why ready() must raise
    inputs: dict[str, str] = field(default_factory=dict)
    input_digests: dict[str, str] = field(default_factory=dict)
    saved: dict[str, SavedValue] = field(default_factory=dict)
    cache_key: str | None = None
    key_parts: dict[str, Any] | None = None
    held: bool = False  # another run of this runner computes the same step (same key)
    claimed: bool = False  # this node holds its key's flight (see LocalRunner.flights)
    executed_notebook: str | None = None
    thread: threading.Thread | None = None
    gpus: int = 0  # devices it must hold while it runs (-1: run with the devices hidden)
    devices: list[str] | None = None  # the devices it holds
    # Earlier steps that may end the notebook (sys.exit()): this one starts only after
    # them, as in the notebook, but their failure does not skip it (unlike ``deps``).
    guards: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        return [*self.step.outputs, *(state_key(s) for s in self.step.state_outputs)]


class LocalRunner:
    """Run pipelines on this machine: parallel, pre-warmed, cached, cancellable.

    Args:
        store: Where runs are recorded (and where run folders and the cache live).
        max_parallel: Steps executing at once (default: CPU count).
        cache: Reuse results of steps whose code, inputs and parameters are unchanged.
        cache_dir: Cache folder (default: ``cache/`` beside the store's database).
        prewarm: Start kernels of upcoming steps before their inputs are ready.
        prewarm_limit: At most this many kernels warming at once, on top of the executing
            ones (default: ``min(2 * max_parallel, max(8, CPU count))``; a chain of short
            steps needs several kernels booting ahead to keep its executing step fed, the
            more the faster the steps follow each other).
        html: Also export each executed step notebook to HTML.
        run_step: The step runtime (default :func:`jupyter_pipeline.runtime.run_step`).
        fork: Fork step kernels from a fork server that has already imported ipykernel and
            the notebook's libraries, wherever a forked kernel behaves like a fresh one
            (Linux, the notebook's kernel is this interpreter's ipykernel, no step
            environment variables); other kernels are spawned. With the default runtime only.
        step_processes: Drive each step (papermill's client: sending cells, receiving
            outputs, writing the executed notebook) from a process of its own, forked from
            a server that has imported papermill (:mod:`jupyter_pipeline.runtime.stepserver`),
            instead of a thread of this process, where every step's client work would share
            one GIL. With the default runtime, on Linux.
        gpus: This machine's GPUs as ``CUDA_VISIBLE_DEVICES`` entries (default: detected,
            see :func:`jupyter_pipeline.runners.gpus.detect_gpus`). A step tagged
            ``limit:nvidia.com/gpu:N`` (or ``limit:gpu:N``) gets N of them to itself and
            waits while none are free.
        allow_cpu: Run steps that ask for more GPUs than there are with the devices hidden
            (on the CPU) instead of refusing the run.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        max_parallel: int | None = None,
        cache: bool = True,
        cache_dir: str | Path | None = None,
        prewarm: bool = True,
        prewarm_limit: int | None = None,
        html: bool = False,
        run_step: Callable[..., StepResult] | None = None,
        fork: bool = True,
        step_processes: bool = True,
        gpus: Sequence[str] | None = None,
        allow_cpu: bool = False,
    ):
        self.store = store
        self.max_parallel = max(1, max_parallel or os.cpu_count() or 1)
        self.cache_enabled = cache
        self.cache = StepCache(cache_dir or default_cache_dir(store.folder))
        self.prewarm = prewarm
        self.prewarm_limit = (
            max(0, prewarm_limit)
            if prewarm_limit is not None
            else min(2 * self.max_parallel, max(8, os.cpu_count() or 1))
        )
        self.html = html
        self._run_step = run_step
        self.fork = fork and run_step is None
        self.step_processes = step_processes and run_step is None
        self._step_server: Any = None  # shared by this runner's runs while any is active
        self._step_server_users = 0
        self.allow_cpu = allow_cpu
        self._gpus: tuple[GpuPool, str] | None = (
            (GpuPool(gpus), f"{len(gpus)} given") if gpus is not None else None
        )
        # Single flight per cache key across this runner's runs (set by a sweep, whose trials
        # start the same shared steps at the same moment): None means every run on its own.
        self.flights: KeyFlights | None = None
        self._active: dict[str, _Execution] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def run(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        output: str | Path | None = None,
        on_event: EventCallback | None = None,
        *,
        run_id: str | None = None,
        source_nb: nbformat.NotebookNode | None = None,
    ) -> Run:
        """Run every step of ``pipeline`` and return the finished run.

        Steps run in dependency order, up to ``max_parallel`` at once. A failed step (after
        its retries) marks its transitive dependents ``skipped``; independent branches go on,
        and the run ends ``failed``. SIGTERM (from ``jupyter-pipeline cancel``) and
        :meth:`cancel` stop every kernel of the run.

        Args:
            pipeline: The analyzed pipeline.
            source_nb_path: The user's notebook (read, never written).
            parameters: Parameter overrides (type-checked against the pipeline's).
            output: If given, write the merged notebook (every code cell with the outputs of
                the step that ran it) there.
            on_event: Called with a :class:`RunEvent` after every state change.
            run_id: Run a queued run already recorded in the store (by
                :mod:`jupyter_pipeline.runners.launch`, which returns its id before this
                runner process starts) instead of recording a new one.
            source_nb: The notebook's content, when it is not (or no longer) what the file
                at ``source_nb_path`` holds: the copy a launched run recorded. Kernels still
                run in ``source_nb_path``'s folder, so relative data paths resolve the same.

        Raises:
            ParameterError: Unknown parameter or wrong type.
            NotebookError: The notebook cannot be read.
        """
        execution = self._prepare(
            pipeline, source_nb_path, parameters, on_event, run_id=run_id, source_nb=source_nb
        )
        return self._execute(execution, output)

    def submit(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        output: str | Path | None = None,
        on_event: EventCallback | None = None,
    ) -> Run:
        """Like :meth:`run`, but return the new (queued) run at once and run it in a thread.

        For servers: the run is in the store before this returns; follow it there or via
        ``on_event``; :meth:`wait` blocks until it ends; :meth:`cancel` stops it.
        """
        execution = self._prepare(pipeline, source_nb_path, parameters, on_event)
        thread = threading.Thread(
            target=self._execute_quietly,
            args=(execution, output),
            name=f"run-{execution.run_id}",
            daemon=True,
        )
        with self._lock:
            # Forget threads of runs that ended long ago; keep the recent ones for wait().
            for rid in [r for r, t in self._threads.items() if not t.is_alive()][:-16]:
                del self._threads[rid]
            self._threads[execution.run_id] = thread
        # Read the record before the thread can move it on: callers get the run as queued.
        queued = self.store.get_run(execution.run_id)
        thread.start()
        return queued

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Wait for a run started with :meth:`submit` to end; return its record."""
        run_id = self.store.resolve_id(run_id)
        with self._lock:
            thread = self._threads.get(run_id)
        if thread is not None:
            thread.join(timeout)
        return self.store.get_run(run_id)

    def _prepare(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None,
        on_event: EventCallback | None,
        *,
        run_id: str | None = None,
        source_nb: nbformat.NotebookNode | None = None,
    ) -> _Execution:
        from jupyter_pipeline import runtime

        source_path = Path(source_nb_path).absolute()
        if source_nb is None:
            source_nb = read_notebook(source_path)
        values = resolve_parameters(pipeline, parameters)
        run_step = self._run_step or runtime.run_step
        gpu_needs = self._check_gpus(pipeline, source_path, source_nb)
        if run_id is None:
            run = self.store.create_run(
                pipeline,
                notebook=source_path,
                backend="local",
                parameters=values,
                pid=os.getpid(),
            )
        else:
            # A launched run: recorded (queued) by the launcher; this process now runs it.
            run = self.store.get_run(run_id)
            self.store.update_run(run.id, pid=os.getpid(), pid_created=process_started(os.getpid()))
        run_dir = Path(run.run_dir) if run.run_dir else self.store.new_run_dir(run.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.store.update_run(run.id, run_dir=str(run_dir))
        (run_dir / "pipeline.json").write_text(pipeline.model_dump_json(indent=1))
        execution = _Execution(
            runner=self,
            pipeline=pipeline,
            run_id=run.id,
            run_dir=run_dir,
            source_path=source_path,
            source_nb=source_nb,
            parameters=values,
            overrides={k: values[k] for k in parameters or {}},
            run_step=run_step,
            on_event=on_event,
        )
        execution.gpu_needs = gpu_needs
        with self._lock:
            self._active[run.id] = execution
        return execution

    @property
    def gpu_pool(self) -> GpuPool:
        """This runner's GPUs (detected on first use unless given)."""
        with self._lock:
            if self._gpus is None:
                devices, found = detect_gpus()
                self._gpus = (GpuPool(devices), found)
            return self._gpus[0]

    def _check_gpus(self, pipeline: Pipeline, path: Path, source_nb: Any) -> dict[str, int]:
        """Devices each GPU step gets; raises GpuUnavailable before anything runs."""
        if not any(gpus_wanted(s)[0] for s in pipeline.steps):
            return {}  # no detection (nvidia-smi) for the pipelines that need none
        pool = self.gpu_pool
        assert self._gpus is not None
        return check_gpus(
            pipeline,
            pool.devices,
            self._gpus[1],
            allow_cpu=self.allow_cpu,
            notebook=str(path),
            source_nb=source_nb,
        )

    def _execute_quietly(self, execution: _Execution, output: str | Path | None) -> None:
        # A background run records its own failure in the store; nobody is there to raise to.
        with contextlib.suppress(Exception):
            self._execute(execution, output)

    def _execute(self, execution: _Execution, output: str | Path | None) -> Run:
        from jupyter_pipeline import runtime

        run_id = execution.run_id
        old_handler = None
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            # `jupyter-pipeline cancel` signals the runner process; turn that into a clean
            # cancel (kill kernels, record states) instead of dying with orphaned kernels.
            old_handler = signal.signal(signal.SIGTERM, lambda *_: execution.request_cancel())
            self.store.update_run(run_id, runner_signals=True)
        try:
            try:
                execution.build_nodes(runtime.build_step_notebook)
                execution.loop()
            except BaseException as exc:
                execution.request_cancel()
                execution.finish_cancel()
                if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    self.store.update_run(
                        run_id, state=RunState.failed, error=f"{type(exc).__name__}: {exc}"
                    )
                elif output is not None:
                    # Ctrl-C: like papermill, keep what ran (the interrupted cell included).
                    with contextlib.suppress(Exception):
                        execution.write_merged(Path(output), runtime.merge_outputs)
                raise
            finally:
                if in_main:
                    signal.signal(signal.SIGTERM, old_handler or signal.SIG_DFL)
            outcome = execution.outcome()
            # The merged notebook is on disk before the run is recorded as finished: whoever
            # sees the final state (the sidebar, `show`, a waiting test) can open it at once.
            try:
                if output is not None:
                    execution.write_merged(Path(output), runtime.merge_outputs, outcome)
            finally:
                if outcome is not None:
                    execution.record_outcome(*outcome)
        finally:
            execution.close_fork_server()
            if execution.step_server is not None:
                self._release_step_server()
            with self._lock:
                self._active.pop(run_id, None)
        return self.store.get_run(run_id)

    def _acquire_step_server(self) -> Any:
        """The step-driver server (started for the first run that needs it), or None."""
        from jupyter_pipeline.runtime import stepserver

        with self._lock:
            if not self.step_processes or not stepserver.supported():
                return None
            if self._step_server is None:
                self._step_server = stepserver.StepServer()
                self._step_server.start()
            self._step_server_users += 1
            return self._step_server

    def _release_step_server(self) -> None:
        """One run no longer needs the server; the last one stops it (no process stays)."""
        with self._lock:
            self._step_server_users -= 1
            server = None
            if self._step_server_users == 0:
                server, self._step_server = self._step_server, None
        if server is not None:
            server.close()

    def cancel(self, run_id: str) -> bool:
        """Cancel a run, whichever process runs it.

        A run of this runner is stopped directly; a run of another process on this host is
        flagged in the store (its runner polls the flag) and its runner is sent SIGTERM.

        Returns:
            True if the run was still going.
        """
        run_id = self.store.resolve_id(run_id)
        with self._lock:
            execution = self._active.get(run_id)
        if execution is not None:
            execution.request_cancel()
            return True
        return cancel_run(self.store, run_id)


def cancel_run(store: RunStore, run_id: str) -> bool:
    """Cancel a run recorded in ``store`` that runs in another process.

    Sets the store's cancel flag (polled by the runner) and sends the runner SIGTERM. If the
    runner is already gone, the run is marked cancelled here and its kernels are killed.

    Returns:
        True if the run was still going.
    """
    run_id = store.resolve_id(run_id)
    run = store.get_run(run_id)
    if run.state.finished:
        return False
    store.request_cancel(run_id)
    if run.backend != "local":
        return True  # a remote backend's runner polls the flag and terminates the remote run
    pid, created, _host, handles_sigterm = store.runner_of(run_id)
    if pid and process_alive(pid, created):
        # Only a runner that said it turns SIGTERM into a cancel gets one (a Jupyter server
        # running runs in threads would die of it); the others poll the flag set above.
        if handles_sigterm and pid != os.getpid():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        return True
    # Nobody is running it: clean up ourselves.
    for s in run.steps:
        extra = store.step_extra(run_id, s.step)
        if extra["kernel_pid"]:
            kill_process_tree(extra["kernel_pid"], extra["kernel_created"])
        if not s.state.finished:
            store.update_step(run_id, s.step, state=RunState.cancelled, finished=time.time())
    store.update_run(run_id, state=RunState.cancelled, finished=time.time(), error="cancelled")
    return True


class KeyFlights:
    """Which cache keys a run of one runner is computing right now.

    A step whose key another run is computing waits for that result (a cache hit once it is
    published) instead of computing it a second time; if the other run fails or is
    cancelled, the key is released and the waiting step computes it itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        self._failed: dict[str, tuple[str, str, int | None]] = {}

    def fail(self, key: str, failure: tuple[str, str, int | None]) -> None:
        """Record that computing ``key`` failed: ``(run id, error, source cell)``.

        The same code on the same inputs fails the same way, so the runs waiting for it
        fail with it instead of computing it again (a flaky step has ``retry:N``).
        """
        with self._lock:
            self._failed[key] = failure

    def failure(self, key: str) -> tuple[str, str, int | None] | None:
        """How computing ``key`` failed in another run, if it did."""
        with self._lock:
            return self._failed.get(key)

    def claim(self, key: str, owner: str) -> bool:
        """Take ``key`` for ``owner``; False if someone else holds it."""
        with self._lock:
            return self._owners.setdefault(key, owner) == owner

    def release(self, key: str, owner: str) -> None:
        """Give ``key`` back (only its owner can)."""
        with self._lock:
            if self._owners.get(key) == owner:
                del self._owners[key]


class _Execution:
    """One run in progress: the scheduler's state and its loop."""

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

            if forkserver.supported():
                self.fork_server = forkserver.ForkServer(
                    str(self.source_path.parent), modules=self.fork_modules()
                )
                self.fork_server.start()
            else:
                self.runner.fork = False
        return self.fork_server

    def get_step_server(self) -> Any:
        """The runner's step-driver server (acquired on first use), or None."""
        if not self.step_server_asked:
            self.step_server_asked = True
            self.step_server = self.runner._acquire_step_server()
        return self.step_server

    def close_fork_server(self) -> None:
        """Stop the fork server (and any kernel of it still alive)."""
        if self.fork_server is not None:
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
                elif deps == "ok" and node.cache_key is None:
                    self.resolve_inputs(node)
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

    def key(self, node: _Node) -> str:
        what: dict[str, Any] = dict(
            code=step_code(node.step_nb),
            inputs=node.input_digests,
            parameters=self.injected_parameters(node.step),
            outputs=node.outputs,
            kernel_name=self.pipeline.kernel_name,
            env=node.step.settings.env,
            files=files_read(node.step_nb, self.source_path.parent),
        )
        node.key_parts = StepCache.key_parts(**what)  # kept with the entry, for plans' reasons
        return StepCache.key(**what)

    def claim(self, node: _Node) -> bool:
        """Take the node's key unless another run computes it; True if the node changed.

        The node becomes held (another run computes its key), or failed (another run's
        computation of its key failed: the same code on the same inputs). Only a sweep's
        runner has flights; a step that is not cached cannot be shared.
        """
        flights = self.runner.flights
        if flights is None or node.cache_key is None or node.claimed:
            return False
        if not (self.runner.cache_enabled and self.cacheable(node)):
            return False
        failed = flights.failure(node.cache_key)
        if failed is not None:
            run_id, error, cell = failed
            node.held = False
            if node.phase == _WARMING:
                self.abort(node, "skipped")
            node.phase = _DONE
            self.set_step(
                node,
                state=RunState.failed,
                finished=time.time(),
                error=f"failed in run {run_id} with the same inputs: {error}",
                error_cell=cell,
            )
            return True
        node.claimed = flights.claim(node.cache_key, f"{self.run_id}/{node.step.name}")
        was_held, node.held = node.held, not node.claimed
        return was_held != node.held

    def release(self, node: _Node) -> None:
        """Give the node's key back: its result is in the cache, or it will not be."""
        if node.claimed and self.runner.flights is not None and node.cache_key is not None:
            self.runner.flights.release(node.cache_key, f"{self.run_id}/{node.step.name}")
        node.claimed = node.held = False

    def cacheable(self, node: _Node) -> bool:
        return node.step.settings.cache is not False

    def try_cache(self, node: _Node) -> bool:
        if not (self.runner.cache_enabled and self.cacheable(node)):
            return False
        assert node.cache_key is not None
        entry = self.runner.cache.lookup(node.cache_key, node.outputs)
        if entry is None:
            return False
        if node.phase == _WARMING:
            self.abort(node, "cached")
        now = time.time()
        self.run_started(now)
        node.saved = {v.name: v for v in entry.outputs}
        executed = log = None
        if entry.executed_notebook is not None:
            executed = node.dir / "executed.ipynb"
            shutil.copy2(entry.executed_notebook, executed)
            node.executed_notebook = str(executed)
        if entry.log is not None:
            log = node.dir / "log.txt"
            shutil.copy2(entry.log, log)
        node.phase = _DONE
        self.set_step(
            node,
            state=RunState.cached,
            started=now,
            finished=now,
            executed_notebook=str(executed) if executed else None,
            log_path=str(log) if log else None,
            outputs={k: v.path for k, v in node.saved.items()},
            digests={k: v.digest for k, v in node.saved.items()},
            metrics=entry.metrics,
            cache_key=node.cache_key,
        )
        return True

    def skip(self, node: _Node) -> None:
        bad = [d for d in node.deps if self.nodes[d].state.finished]
        bad = [d for d in bad if self.nodes[d].state not in _FINISHED_OK]
        if node.phase == _WARMING:
            self.abort(node, "skipped")
        node.phase = _DONE
        self.set_step(
            node,
            state=RunState.skipped,
            error=f"upstream step {', '.join(bad)} did not succeed" if bad else None,
        )

    def abort(self, node: _Node, why: str) -> None:
        """Stop a warming step: its ready() raises, the runtime shuts its kernel down."""
        node.abort = why
        node.go.set()

    def grant(self, node: _Node) -> None:
        """Give a warming step its execution slot and its inputs."""
        node.phase = _EXECUTING
        node.attempts = 1
        self.mark_running(node)
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
        try:
            self.attempt_done(node, payload)
        finally:
            if node.phase != _EXECUTING:  # not retried (a retry keeps its devices)
                self.give_back_gpus(node)

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
            outputs={k: v.path for k, v in node.saved.items()},
            digests={k: v.digest for k, v in node.saved.items()},
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
            outputs={k: v.path for k, v in node.saved.items()},
            digests={k: v.digest for k, v in node.saved.items()},
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


def _as_dict(nb: Any) -> dict[str, Any]:
    return json.loads(json.dumps(nb))


def _describe_failure(step: str, payload: Any) -> tuple[str, int | None]:
    if isinstance(payload, StepResult) and payload.failure is not None:
        f = payload.failure
        msg = f.message or f"{f.ename}: {f.evalue}"
        return msg.splitlines()[0] if msg else f.ename, f.cell
    if isinstance(payload, StepResult):
        return f"step {step} failed", None
    if isinstance(payload, BaseException):
        text = str(payload).strip().splitlines()
        ename = getattr(payload, "ename", None) or type(payload).__name__  # from a driver
        return f"{ename}: {text[0] if text else ''}".rstrip(": "), None
    return f"step {step} failed", None
