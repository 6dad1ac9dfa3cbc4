"""Running one step notebook with papermill in a fresh kernel.

The step runs through papermill's own machinery (parameter injection, executed-notebook
writing, error markers) with a small engine registered in papermill's engine registry. The
engine adds what a pipeline runner needs: the kernel's process id as soon as it exists (to
cancel it), pre-warming (parameters and definitions run before the inputs exist), the
run-time paths of the load and save cells, and kernels forked from a fork server
(:mod:`jupyter_pipeline.runtime.forkserver`) instead of spawned.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import nbformat
from nbformat import NotebookNode

from jupyter_pipeline.runtime.api import SavedValue, StepFailure, StepRequest, StepResult
from jupyter_pipeline.runtime.kernel import METRICS_FILE, OUTPUTS_FILE
from jupyter_pipeline.runtime.notebook import (
    DEFINITIONS_TAG,
    DERIVED_TAG,
    LOAD_TAG,
    META_KEY,
    PARAMETERS_TAG,
    SAVE_TAG,
    render_load,
    render_save,
)

if TYPE_CHECKING:
    from jupyter_pipeline.runtime.forkserver import ForkServer

__all__ = ["ENGINE_NAME", "StepExecutionError", "kill_kernel", "register_engine", "run_step"]

ENGINE_NAME = "jupyter-pipeline"
_REGISTER_LOCK = threading.Lock()
# <tmp>/jp-kernel-<pid>-<random>: a kernel's connection sockets, made by the process that
# drives it (the runner, or a step driver), which removes it once the kernel is gone.
KERNEL_DIR_PREFIX = "jp-kernel-"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")


class StepExecutionError(Exception):
    """A step failed; ``failure`` says where and why (raised by ``run_step(check=True)``)."""

    def __init__(self, failure: StepFailure, result: StepResult | None = None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.result = result


def kill_kernel(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Kill a step kernel and every process it started.

    jupyter_client starts kernels in a new session (``start_new_session=True``; a kernel
    forked from a fork server calls ``setsid()`` itself), so the kernel leads its own
    process group and its children inherit it.

    Returns:
        True if a signal was sent, False if the group was already gone.
    """
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # not a group leader we own: at least the kernel itself
        os.kill(pid, sig)
    return True


class _Context:
    """Per-run state shared between run_step and the engine (which papermill builds)."""

    def __init__(
        self,
        request: StepRequest,
        ready: Callable[[], dict[str, str]] | None,
        on_kernel: Callable[[int], None] | None,
        fork_server: ForkServer | None = None,
        on_saved: Callable[[list[SavedValue], dict[str, Any]], None] | None = None,
    ) -> None:
        self.request = request
        self.ready = ready
        self.on_kernel = on_kernel
        self.on_saved = on_saved
        self.fork_server = fork_server
        # Why the kernel was spawned though a fork server was given (a slower start).
        self.fork_fallback: str | None = None
        self.log: Any = None  # the step's log file, while it runs
        self.nb: NotebookNode | None = None
        self.parameters: dict[str, Any] = {}  # the overrides papermill injects
        self.pid: int | None = None
        self.ready_error: BaseException | None = None
        self.granted = ready is None  # a warming step has its inputs (its own cells may run)
        self.crash: tuple[int, BaseException] | None = None
        # Unix sockets instead of TCP ports between runner and kernel: a TCP port is picked
        # by binding and releasing it, and another process starting kernels at the same
        # moment can take it first (the kernel then dies before it replies). jupyter_client's
        # default socket path is relative to the cwd, which differs between the runner and
        # a step kernel, so each kernel gets its own absolute (short) path.
        self.ipc_dir: str | None = None
        if os.name == "posix":
            from jupyter_pipeline.runtime.tmpdirs import private_dir

            # Named after this process: one killed before it could remove the folder
            # leaves it to the next runner (see LocalRunner).
            self.ipc_dir = private_dir(KERNEL_DIR_PREFIX)

    def inputs(self) -> dict[str, str]:
        if self.ready is not None:
            try:
                found = self.ready()
            except BaseException as exc:
                self.ready_error = exc
                raise
            self.granted = True
            return {k: os.path.abspath(v) for k, v in found.items()}
        return {k: os.path.abspath(v) for k, v in self.request.inputs.items()}


def register_engine() -> None:
    """Register the engine in papermill's registry (once; safe from several threads)."""
    with _REGISTER_LOCK:
        if ENGINE_NAME not in _papermill_engines()._engines:
            _register_engine()


def _papermill_engines() -> Any:
    from papermill.engines import papermill_engines

    return papermill_engines


def _register_engine() -> None:
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines
    from papermill.log import logger
    from papermill.utils import remove_args

    from jupyter_pipeline.runtime.quiet import no_interrupt_at_shutdown

    class Client(PapermillNotebookClient):
        jp: _Context

        def create_kernel_manager(self) -> Any:
            km = super().create_kernel_manager()
            no_interrupt_at_shutdown(km)  # no "KeyboardInterrupt caught in kernel" in logs
            if self.jp.fork_server is not None:
                km.fork_server = self.jp.fork_server
            if self.jp.ipc_dir is not None:
                km.transport = "ipc"
                km.ip = os.path.join(self.jp.ipc_dir, "k")
            return km

        def start_new_kernel(self, **kwargs: Any) -> None:
            # nbclient's sync wrapper is bound to the base coroutine: override it here.
            if getattr(self.km, "ipykernel", False):
                # Keeps ipykernel's start-up chatter (e.g. the "TCP without encryption"
                # warning where kernels use TCP) out of every step log; cell output and
                # tracebacks are unaffected.
                extra: list[str] = list(self.extra_arguments)  # type: ignore[has-type]
                self.extra_arguments = [*extra, "--IPKernelApp.log_level=ERROR"]
            super().start_new_kernel(**kwargs)
            provisioner = getattr(self.km, "provisioner", None)
            if self.jp.fork_server is not None:
                # ForkProvisioner records why it spawned; another provisioner is the spec's.
                reason = getattr(
                    provisioner, "fork_fallback", "its kernel spec names its own provisioner"
                )
                if reason:
                    self.jp.fork_fallback = reason
                    if self.jp.log is not None:  # at warning level, so a slow step explains
                        self.jp.log.write(
                            f"[jupyter-pipeline] WARNING: kernel spawned, not forked (a slower "
                            f"start): {reason}\n"
                        )
                        self.jp.log.flush()
            pid = getattr(provisioner, "pid", None)
            if pid is not None:
                self.jp.pid = pid
                if self.jp.on_kernel is not None:
                    try:
                        self.jp.on_kernel(pid)
                    except BaseException:
                        # Raised before nbclient's cleanup is armed: stop the kernel here.
                        self._cleanup_kernel()
                        raise

        def papermill_execute_cells(self) -> None:
            from nbclient.exceptions import CellExecutionError

            request = self.jp.request
            meta = self.nb.metadata.get(META_KEY, {})
            for index, cell in enumerate(self.nb.cells):
                tags = cell.metadata.get("tags", [])
                if LOAD_TAG in tags:
                    # Pre-warming ends here: parameters and definitions already ran.
                    cell.source = render_load(self.jp.inputs())
                elif DERIVED_TAG in tags:
                    # The step's parameters lines again (defaults, computed lines), then the
                    # overrides: what papermill's one parameters cell + injection leave.
                    derived = cell.metadata.get(META_KEY, {})
                    defaults = derived.get("defaults", {})
                    overrides = {
                        k: v
                        for k, v in self.jp.parameters.items()
                        if k not in defaults or v != defaults[k]
                    }
                    cell.source = derived.get("code", cell.source)
                    if overrides:
                        from papermill.translators import translate_parameters

                        cell.source += "\n" + translate_parameters(
                            self.kernel_name, "python", overrides, "Parameters"
                        )
                elif SAVE_TAG in tags:
                    cell.source = render_save(
                        os.path.abspath(request.output_dir),
                        list(request.outputs),
                        list(meta.get("metrics", [])),
                    )
                try:
                    self.nb_man.cell_start(cell, index)
                    self.execute_cell(cell, index)
                    if SAVE_TAG in tags and self.jp.on_saved is not None:
                        # The outputs exist now: dependents need not wait for the kernel's
                        # shutdown and the final notebook write.
                        self.jp.on_saved(*read_outputs(os.path.abspath(request.output_dir)))
                except CellExecutionError as ex:
                    self.nb_man.cell_exception(self.nb.cells[index], cell_index=index, exception=ex)
                    break
                except BaseException as ex:  # kernel died (cancelled), timeout, …
                    self.jp.crash = (index, ex)
                    raise
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)

        def log_output_message(self, output: Any) -> None:
            super().log_output_message(output)
            if output.output_type == "error" and self.stderr_file:
                self.stderr_file.write(_ANSI.sub("", "\n".join(output.traceback)) + "\n")
                self.stderr_file.flush()

    class Manager(NotebookExecutionManager):
        """Papermill's execution manager, saving at most once a second until the end.

        Papermill writes the whole notebook at every cell start and end; for short steps
        those writes cost more than the cells. The final save always happens.
        """

        final = False
        papermill_writes = False  # execution ended normally: papermill's own final write follows
        jp: _Context | None = None

        def save(self, **kwargs: Any) -> None:
            if self.final and self.papermill_writes:
                return  # written once, by papermill (with its error markers if a cell failed)
            if self.jp is not None and not self.jp.granted and not self.final:
                # Warming: only generated cells ran, and a cache hit may be about to put the
                # step's notebook where this would write (a slow kernel start made the
                # once-a-second save land here before the abort).
                return
            aborted = self.jp is not None and self.jp.ready_error is not None
            if aborted and self.output_path and os.path.exists(self.output_path):
                # A warm-up stopped before its inputs came ran no cell of the user's: it must
                # not replace the step's notebook a cache hit has already put there.
                return
            if self.final or (self.now() - self.last_save_time).total_seconds() >= 1.0:
                super().save(**kwargs)

        def notebook_complete(self, **kwargs: Any) -> None:
            self.final = True
            super().notebook_complete(**kwargs)

    class Engine(NBClientEngine):
        @classmethod
        def execute_notebook(
            cls,
            nb: Any,
            kernel_name: str,
            output_path: str | None = None,
            progress_bar: bool = False,
            log_output: bool = False,
            autosave_cell_every: int = 30,
            **kwargs: Any,
        ) -> Any:
            nb_man = Manager(
                nb,
                output_path=output_path,
                progress_bar=progress_bar,
                log_output=log_output,
                autosave_cell_every=autosave_cell_every,
            )
            nb_man.jp = kwargs.get("jp_context")
            nb_man.notebook_start()
            try:
                cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
                nb_man.papermill_writes = True
            finally:
                nb_man.cleanup_pbar()
                nb_man.notebook_complete()
            return nb_man.nb

        @classmethod
        def execute_managed_notebook(
            cls,
            nb_man: Any,
            kernel_name: str,
            log_output: bool = False,
            stdout_file: Any = None,
            stderr_file: Any = None,
            start_timeout: int = 60,
            execution_timeout: int | None = None,
            jp_context: _Context | None = None,
            jp_kernel_kwargs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            assert jp_context is not None
            kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
            jp_context.nb = nb_man.nb
            if jp_context.fork_server is not None:
                from jupyter_pipeline.runtime.forkserver import kernel_manager_class

                kwargs["kernel_manager_class"] = kernel_manager_class()
            client = Client(
                nb_man,
                timeout=execution_timeout,
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
                **kwargs,
            )
            client.jp = jp_context
            return client.execute(**(jp_kernel_kwargs or {}))

    papermill_engines.register(ENGINE_NAME, Engine)
    logger.addFilter(_quiet_kernel_death)


def _quiet_kernel_death(record: Any) -> bool:
    """Drop nbclient's "Kernel died …" lines (logged on papermill's logger).

    A step's kernel dies when a run is cancelled (Ctrl-C, ``cancel``): that is no error to
    print. When it dies by itself, the step's failure says so ("DeadKernelError: Kernel
    died", with the cell), once, where the other failures are shown.
    """
    message = str(record.msg)
    return not (
        message.startswith("Kernel died")
        or message.startswith("Error occurred while starting new kernel client")
    )


def _thread_loop() -> Any:
    from jupyter_core.utils import _loop

    return _loop.get()


def _close_new_loop(before: Any) -> None:
    """Close the event loop nbclient made for this thread (3 fds a step otherwise leak).

    jupyter_core keeps one loop per thread and never closes it; a runner starting a thread
    per step would pile them up.
    """
    import asyncio

    from jupyter_core.utils import _loop

    loop = _loop.get()
    if loop is None or loop is before or loop.is_running():
        return
    loop.close()
    _loop.set(before)
    asyncio.set_event_loop(before)


def _source_cell(cell: Any) -> int | None:
    return cell.get("metadata", {}).get(META_KEY, {}).get("source_cell")


def _definition_cell(cell: Any, traceback: list[str]) -> int | None:
    """Map an error in the definitions cell back to the source cell of the failing snippet."""
    snippets = cell.get("metadata", {}).get(META_KEY, {}).get("snippets", [])
    for line in traceback:
        match = _CELL_LINE.search(_ANSI.sub("", line))
        if match:
            lineno = int(match.group(1))
            for s in snippets:
                if s["start"] <= lineno < s["start"] + s["lines"]:
                    return s["cell"]
            return None
    return None


def _find_failure(
    step: str, nb: NotebookNode, crash: tuple[int, BaseException] | None = None
) -> StepFailure:
    """Locate the first error in an executed step notebook and pin it to a source cell.

    ``crash`` is (cell position, exception) when execution itself broke off (the kernel
    died or was killed, a timeout) instead of a cell raising.
    """
    for position, cell in enumerate(nb.cells):
        if cell.get("cell_type") != "code":
            continue
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        crashed = crash is not None and crash[0] == position
        if error is None and not crashed:
            continue
        if error is not None:
            ename, evalue = error.get("ename", "Error"), error.get("evalue", "")
            traceback = [_ANSI.sub("", t) for t in error.get("traceback", [])]
        else:
            assert crash is not None
            ename, evalue, traceback = type(crash[1]).__name__, str(crash[1]), []
        tags = cell.get("metadata", {}).get("tags", [])
        index = _source_cell(cell)
        what = f"{ename}: {evalue}" if evalue else ename
        if index is not None:
            message = f"step {step} failed in cell {index}: {what}"
        elif DEFINITIONS_TAG in tags:
            index = _definition_cell(cell, traceback)
            where = f" (from cell {index})" if index is not None else ""
            message = f"step {step} failed replaying its imports and definitions{where}: {what}"
        elif LOAD_TAG in tags:
            message = f"step {step} failed loading its inputs: {what}"
        elif DERIVED_TAG in tags:
            cells = cell.get("metadata", {}).get(META_KEY, {}).get("cells") or [None]
            index = cells[0]
            message = (
                f"step {step} failed in cell {index} computing a value in the parameters cell: "
                f"{what}"
            )
        elif SAVE_TAG in tags:
            if ename == "UnserializableValue":
                message = f"step {step}: {evalue}"
            else:
                message = f"step {step} failed saving its outputs: {what}"
        elif PARAMETERS_TAG in tags or "injected-parameters" in tags:
            message = f"step {step} failed setting its parameters: {what}"
        else:
            message = f"step {step} failed: {what}"
        return StepFailure(
            step=step, cell=index, ename=ename, evalue=evalue, traceback=traceback, message=message
        )
    # A cell can fail without an error output: IPython reports a line magic's UsageError
    # on stderr and only the execute reply says "error". papermill's own record of the cell
    # (metadata.papermill.exception) says which cell; its stderr says what went wrong.
    for cell in nb.cells:
        if cell.get("metadata", {}).get("papermill", {}).get("exception") is not True:
            continue
        if clean_stop(cell):
            continue
        stderr = "".join(
            "".join(o.get("text", ""))
            for o in cell.get("outputs", [])
            if o.get("output_type") == "stream" and o.get("name") == "stderr"
        )
        lines = [ln.strip() for ln in _ANSI.sub("", stderr).splitlines() if ln.strip()]
        ename, evalue = "CellExecutionError", lines[-1] if lines else ""
        match = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Warning)): ?(.*)$", evalue)
        if match:
            ename, evalue = match.group(1), match.group(2)
        index = _source_cell(cell)
        what = f"{ename}: {evalue}" if evalue else ename
        where = f" in cell {index}" if index is not None else ""
        return StepFailure(
            step=step,
            cell=index,
            ename=ename,
            evalue=evalue,
            traceback=lines,
            message=f"step {step} failed{where}: {what}",
        )
    return StepFailure(
        step=step, ename="StepError", evalue="", message=f"step {step} failed (no error recorded)"
    )


def clean_stop(cell: Any) -> bool:
    """Whether a cell ended the notebook cleanly: ``sys.exit()``, ``sys.exit(0)`` or ``raise
    SystemExit`` (papermill's rule: such a run succeeds and the later cells do not run)."""
    return any(
        o.get("output_type") == "error"
        and o.get("ename") == "SystemExit"
        and o.get("evalue") in ("", "0")
        for o in cell.get("outputs", [])
    )


def _stopped_at(nb: NotebookNode) -> int | None:
    """The source cell where a step's run ended with a clean stop, if it did."""
    for cell in nb.cells:
        if cell.get("cell_type") == "code" and clean_stop(cell):
            index = _source_cell(cell)
            return index if index is not None else -1
    return None


def _export_html(notebook_path: str) -> str:
    from nbconvert import HTMLExporter

    nb = nbformat.read(notebook_path, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html_path = os.path.splitext(notebook_path)[0] + ".html"
    with open(html_path, "w", encoding="utf-8") as f:
        f.write(body)
    return html_path


def read_outputs(output_dir: str) -> tuple[list[SavedValue], dict[str, Any]]:
    """The saved values and metrics a step's save cell recorded in ``output_dir``."""
    outputs: list[SavedValue] = []
    metrics: dict[str, Any] = {}
    path = os.path.join(output_dir, OUTPUTS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            for rec in json.load(f):
                outputs.append(
                    SavedValue(
                        name=rec["name"],
                        path=rec["path"],
                        serializer=rec["serializer"],
                        type=rec["type"],
                        digest=rec["digest"],
                        size=rec["size"],
                    )
                )
    path = os.path.join(output_dir, METRICS_FILE)
    if os.path.exists(path):
        with open(path) as f:
            metrics = json.load(f)
    return outputs, metrics


def run_step(
    request: StepRequest,
    *,
    ready: Callable[[], dict[str, str]] | None = None,
    on_kernel: Callable[[int], None] | None = None,
    check: bool = False,
    fork_server: ForkServer | None = None,
    on_saved: Callable[[list[SavedValue], dict[str, Any]], None] | None = None,
) -> StepResult:
    """Execute a step notebook with papermill in a fresh kernel.

    The executed notebook is always written to ``request.executed_notebook`` (and exported
    to HTML if ``request.html``) before this returns or raises. Cell output streams to
    ``request.log_path`` as it runs.

    Args:
        request: What to run and where (see :class:`StepRequest`).
        ready: Pre-warming. If given, the kernel starts and runs the parameters and
            definitions cells first; then ``ready()`` is called. It blocks until the
            inputs exist and returns the input map (name → directory), replacing
            ``request.inputs``; raising aborts the step (the exception propagates after
            the kernel is shut down and the executed notebook saved).
        on_kernel: Called with the kernel's process id as soon as it exists. The kernel
            leads its own process group: :func:`kill_kernel` stops it and its children.
        check: Raise :class:`StepExecutionError` instead of returning a failed result.
        fork_server: Fork the kernel from this :class:`~jupyter_pipeline.runtime.forkserver.
            ForkServer` (whose zygote has ipykernel and the notebook's libraries imported)
            instead of spawning it, whenever that is faithful; else a kernel is spawned as
            usual. Never used for a step with its own environment variables
            (``request.env``): pre-imported libraries read the environment at import.
        on_saved: Called with the saved values and metrics as soon as the save cell has run
            (before the kernel shuts down and the executed notebook is written), so that
            dependent steps can start.

    Returns:
        The result: saved outputs with digests, metrics, failure (if any), timings.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    register_engine()
    loop_before = _thread_loop()

    started = time.time()
    executed_path = os.path.abspath(request.executed_notebook)
    output_dir = os.path.abspath(request.output_dir)
    os.makedirs(os.path.dirname(executed_path), exist_ok=True)
    os.makedirs(output_dir, exist_ok=True)
    for stale in (OUTPUTS_FILE, METRICS_FILE):
        if os.path.exists(os.path.join(output_dir, stale)):
            os.remove(os.path.join(output_dir, stale))

    nb = nbformat.from_dict(request.step_notebook)
    step_meta = nb.metadata.get(META_KEY, {})
    wanted = step_meta.get("parameters")
    parameters = {k: v for k, v in request.parameters.items() if wanted is None or k in set(wanted)}
    ctx = _Context(request, ready, on_kernel, None if request.env else fork_server, on_saved)
    ctx.parameters = parameters
    cwd = os.path.abspath(request.cwd) if request.cwd else os.getcwd()

    log = open(request.log_path, "a", encoding="utf-8") if request.log_path else None  # noqa: SIM115
    ctx.log = log
    # The kernel process's own stdout/stderr (subprocesses, C extensions, `os.system`)
    # goes to the log too, not to the runner's terminal; without a log it is inherited.
    kernel_kwargs: dict[str, Any] = {"stdout": log, "stderr": log} if log is not None else {}
    if request.env:
        kernel_kwargs["env"] = {**os.environ, **request.env}
    failure: StepFailure | None = None
    html: str | None = None
    try:
        try:
            papermill.execute_notebook(
                nb,
                executed_path,
                parameters=parameters or None,
                engine_name=ENGINE_NAME,
                kernel_name=request.kernel_name,
                language="python",
                progress_bar=False,
                log_output=False,
                stdout_file=log,
                stderr_file=log,
                # Not papermill's `cwd`: that chdirs the whole process (unsafe with threads).
                resources={"metadata": {"path": cwd}},
                jp_context=ctx,
                jp_kernel_kwargs=kernel_kwargs,
            )
        except PapermillExecutionError:
            assert ctx.nb is not None
            failure = _find_failure(request.step, ctx.nb)
        except Exception:  # not BaseException: Ctrl-C must still interrupt the runner
            if ctx.ready_error is not None or ctx.nb is None:
                raise
            # Kernel died (cancelled), timed out, …: a failure of this step, not the caller's.
            # The engine's final save has written the executed notebook as it stood.
            failure = _find_failure(request.step, ctx.nb, ctx.crash)
            if failure.ename == "StepError":
                raise
    finally:
        _close_new_loop(loop_before)
        if ctx.ipc_dir is not None:
            import shutil

            shutil.rmtree(ctx.ipc_dir, ignore_errors=True)
        if log is not None:
            log.close()
        if request.html and os.path.exists(executed_path):
            html = _export_html(executed_path)

    stopped = _stopped_at(ctx.nb) if failure is None and ctx.nb is not None else None
    outputs, metrics = ([], {}) if failure or stopped is not None else read_outputs(output_dir)
    result = StepResult(
        step=request.step,
        status="failed" if failure else "succeeded",
        stopped_at=stopped,
        outputs=outputs,
        metrics=metrics,
        executed_notebook=executed_path,
        html=html,
        failure=failure,
        started=started,
        finished=time.time(),
        fork_fallback=ctx.fork_fallback,
    )
    if check and failure is not None:
        raise StepExecutionError(failure, result)
    return result
