"""The :class:`LocalRunner` facade: start, submit, wait for and cancel local runs.

It prepares a run (records it, checks GPUs, makes its folder), hands it to an
:class:`~jupyter_pipeline.runners.local.execution._Execution` on the calling thread or a
thread of its own, turns SIGTERM into a clean cancel, and shares one step-driver server
between its active runs. :func:`cancel_run` cancels a run of another process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat

from jupyter_pipeline.model import Pipeline, Run, RunState
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.base import EventCallback, resolve_parameters
from jupyter_pipeline.runners.cache import StepCache, default_cache_dir
from jupyter_pipeline.runners.gpus import GpuPool, check_gpus, detect_gpus, gpus_wanted
from jupyter_pipeline.runners.local.execution import _Execution
from jupyter_pipeline.runners.local.keys import KeyFlights
from jupyter_pipeline.runtime.api import StepResult
from jupyter_pipeline.store import RunStore, kill_process_tree, process_alive, process_started

__all__ = ["LocalRunner", "cancel_run"]


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
        # Set by a sweep: fork servers shared by this runner's runs, one per (working
        # directory, pre-imports) — its trials' kernels are the same kernels — closed by
        # close_shared_fork_servers(). None: each run starts (and stops) its own.
        self.shared_fork_servers: dict[tuple[str, tuple[str, ...]], Any] | None = None
        self._fork_lock = threading.Lock()
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
        self._swept = False  # stale temporary folders removed (at the first run)

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
        from jupyter_pipeline.runtime.execute import KERNEL_DIR_PREFIX
        from jupyter_pipeline.runtime.tmpdirs import remove_stale

        if not self._swept:
            # Kernel socket folders of runners (or step drivers) killed before they could
            # remove them: once per runner, before its first kernel.
            self._swept = True
            remove_stale(KERNEL_DIR_PREFIX)
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

    def shared_fork_server(self, cwd: str, modules: list[str]) -> Any:
        """The shared fork server for kernels in ``cwd`` pre-importing ``modules`` (started
        on first use); see :attr:`shared_fork_servers`."""
        from jupyter_pipeline.runtime import forkserver

        assert self.shared_fork_servers is not None
        key = (cwd, tuple(modules))
        with self._fork_lock:
            server = self.shared_fork_servers.get(key)
            if server is None:
                server = forkserver.ForkServer(cwd, modules=modules)
                server.start()
                self.shared_fork_servers[key] = server
            return server

    def close_shared_fork_servers(self) -> None:
        """Stop the shared fork servers (a sweep's, at its end)."""
        with self._fork_lock:
            servers = list((self.shared_fork_servers or {}).values())
            if self.shared_fork_servers is not None:
                self.shared_fork_servers.clear()
        for server in servers:
            server.close()

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
