"""Step drivers: run each step's papermill client in a process of its own.

A step is a kernel *and* a client that drives it: papermill and nbclient build the step
notebook, send each cell, receive and deserialize every message, and write the executed
notebook. Run in the runner's threads, that client work of every step (~30 ms of CPU for a
trivial step, more for chatty ones) is serialized by the runner's one GIL: with 16 steps at
once on 16 cores, they queue for one core. Here each step's client runs in its own process,
a ``fork()`` of a server that has already imported papermill, nbclient and jupyter_client
(so a driver starts in ~2 ms instead of paying ~0.5 s of imports), and the runner's part of
a step shrinks to a few messages.

The server (``python -m jupyter_pipeline.runtime.stepserver``) is one single-threaded poll
loop: it accepts a connection, forks, and the child (the *driver*) runs
:func:`jupyter_pipeline.runtime.run_step` for the request it reads from that connection,
reporting back as it goes:

========================  ================================================================
driver → runner           meaning
========================  ================================================================
``{"kernel": pid}``       the step's kernel exists (``on_kernel``)
``{"ready": true}``       warm: parameters and definitions ran; waiting for the inputs
``{"saved": [...]}``      the save cell ran: the step's outputs (and metrics) exist
``{"retired": …}``        the kernel fork server retired; the runner answers with the
                          replacement's address
``{"result": {...}}``     the :class:`StepResult` (last message)
``{"aborted": why}``      the warm-up was stopped by the runner (last message)
``{"error": …}``          ``run_step`` raised (last message)
========================  ================================================================

The runner answers ``ready`` with ``{"inputs": {...}}`` or ``{"abort": why}``. Frames are
JSON with a 4-byte length (step notebooks can exceed a datagram). The server's standard
input is a pipe from the runner: end of file kills the drivers and ends the server, so
nothing outlives the runner. Kernels are still forked from the kernel fork server
(:mod:`jupyter_pipeline.runtime.forkserver`) whose address the request carries.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jupyter_pipeline.runtime.tmpdirs import private_dir, remove_stale

if TYPE_CHECKING:
    from jupyter_pipeline.runtime.api import SavedValue, StepRequest, StepResult
    from jupyter_pipeline.runtime.forkserver import ForkServer

__all__ = ["StepDriverError", "StepServer", "supported"]


class StepDriverError(Exception):
    """``run_step`` raised in the driver, or the driver died; ``ename`` is the original type."""

    def __init__(self, ename: str, message: str) -> None:
        super().__init__(message)
        self.ename = ename


class _Aborted(Exception):
    pass


def supported() -> bool:
    """Whether steps can be driven from forked processes here (Linux: fork, pidfd)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and hasattr(os, "pidfd_open")


# ============================================================================ framing


def _send(sock: socket.socket, obj: Any) -> None:
    data = json.dumps(obj).encode()
    sock.sendall(len(data).to_bytes(4, "big") + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> Any:
    """The next frame, or None at end of file (or a broken connection)."""
    try:
        head = _recv_exact(sock, 4)
        if head is None:
            return None
        data = _recv_exact(sock, int.from_bytes(head, "big"))
    except OSError:
        return None
    return None if data is None else json.loads(data)


# ============================================================================ the driver


_KERNEL: list[int] = []  # the driver's kernel, once it exists
_FOLDER_PREFIX = "jp-stepserver-"  # <tmp>/jp-stepserver-<runner pid>-<random>: its socket


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM (the server is stopping): take the kernel down too, then go."""
    from jupyter_pipeline.runtime.execute import kill_kernel

    for pid in _KERNEL:
        with contextlib.suppress(OSError):
            kill_kernel(pid)  # its own process group: it would outlive the driver
    os._exit(1)


def _drive(conn: socket.socket) -> None:
    """In a forked child: run one step for the runner at the other end of ``conn``."""
    from jupyter_pipeline.runtime.api import StepRequest
    from jupyter_pipeline.runtime.execute import run_step

    msg = _recv(conn)
    if msg is None:
        return
    request = StepRequest.model_validate(msg["request"])
    fork_server = None
    if msg.get("fork_server"):
        from jupyter_pipeline.runtime.forkserver import ForkServer

        def replacement(module: str, why: str, path: str) -> dict[str, Any] | None:
            _send(conn, {"retired": [module, why, path]})
            reply = _recv(conn)
            return reply.get("fork_server") if reply else None

        fork_server = ForkServer.attach(**msg["fork_server"], on_retired=replacement)

    def ready() -> dict[str, str]:
        _send(conn, {"ready": True})
        reply = _recv(conn)
        if reply is None or "abort" in reply:
            raise _Aborted(reply["abort"] if reply else "the runner is gone")
        return dict(reply["inputs"])

    def on_kernel(pid: int) -> None:
        _KERNEL[:] = [pid]
        _send(conn, {"kernel": pid})

    def on_saved(saved: list[SavedValue], metrics: dict[str, Any]) -> None:
        _send(conn, {"saved": [v.model_dump() for v in saved], "metrics": metrics})

    try:
        result = run_step(
            request,
            ready=ready if msg.get("warm") else None,
            on_kernel=on_kernel,
            on_saved=on_saved,
            fork_server=fork_server,
        )
    except _Aborted as exc:
        _send(conn, {"aborted": str(exc)})
    except BaseException as exc:
        _send(conn, {"error": type(exc).__name__, "message": str(exc)})
    else:
        _send(conn, {"result": result.model_dump(mode="json")})


# ============================================================================ the server


class _Server:
    """The driver server: single-threaded, one poll loop; a fork per connection."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.children: dict[int, int] = {}  # pidfd -> pid

    def serve(self) -> None:
        poller = select.poll()
        poller.register(0, select.POLLIN)
        poller.register(self.listener.fileno(), select.POLLIN)
        while True:
            for fd, _ in poller.poll():
                if fd == 0:
                    if not os.read(0, 4096):
                        self.stop_children()
                        return
                elif fd == self.listener.fileno():
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = self.listener.accept()
                        self.fork(conn, poller)
                elif fd in self.children:
                    poller.unregister(fd)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(self.children.pop(fd), 0)
                    os.close(fd)

    def fork(self, conn: socket.socket, poller: Any) -> None:
        from jupyter_pipeline.runtime.forkserver import run_forked_child  # preimported

        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the driver

            def driver() -> int:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, _terminated)
                self.listener.close()
                for pidfd in self.children:
                    os.close(pidfd)
                os.close(0)  # the runner's death pipe is the server's to watch
                conn.setblocking(True)
                _drive(conn)
                return 0

            run_forked_child(driver)
        conn.close()
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = pid
        poller.register(pidfd, select.POLLIN)

    def stop_children(self) -> None:
        """Stop the drivers still running: each takes its kernel down (SIGTERM), or is
        killed after a few seconds."""
        import time

        for pid in self.children.values():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for pid in self.children.values():
            while time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    if os.waitpid(pid, os.WNOHANG)[0] == 0:
                        time.sleep(0.02)
                        continue
                break
            else:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)


def _preimport() -> None:
    """What every driver needs, imported once here instead of once per step."""
    import jupyter_client.provisioning  # noqa: F401
    import nbclient  # noqa: F401
    import nbformat
    import papermill
    import papermill.clientwrap  # noqa: F401
    import zmq.asyncio  # noqa: F401
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.provisioning import KernelProvisionerFactory

    from jupyter_pipeline.runtime import execute, forkserver

    execute.register_engine()
    forkserver.kernel_manager_class()
    # What a driver would otherwise do once for itself, each time (measured: ~0.3 s of CPU
    # a step): compile nbformat's schema validator (papermill validates on read and write),
    # find the python3 kernel spec (which imports ipykernel.kernelspec, hence IPython), and
    # load the kernel provisioners' entry points.
    nbformat.validate(nbformat.v4.new_notebook())
    with contextlib.suppress(Exception):  # a missing spec fails in the driver, as it would
        KernelSpecManager().get_kernel_spec("python3")
    KernelProvisionerFactory.instance()


def main(argv: list[str] | None = None) -> int:
    """Run a driver server (``python -m jupyter_pipeline.runtime.stepserver --listen-fd N``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jupyter_pipeline.runtime.stepserver")
    parser.add_argument("--listen-fd", type=int, required=True, help="listening Unix socket")
    parser.add_argument("--ready-fd", type=int, help="closed once the imports are done")
    parser.add_argument("--folder", help="this server's folder (its socket): removed at exit")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the runner's to handle
    listener = socket.socket(fileno=args.listen_fd)
    listener.set_inheritable(False)
    _preimport()
    # Every driver is a fork of this process: keep the collector away from the objects the
    # imports made (else each driver's first full collection walks them all, and touching
    # their headers copies the pages fork shared: most of a driver's CPU, measured).
    gc.collect()
    gc.freeze()
    if args.ready_fd is not None:
        os.close(args.ready_fd)
    _Server(listener).serve()
    if args.folder:  # the runner is gone (a killed one could not remove it) or closed it
        shutil.rmtree(args.folder, ignore_errors=True)
    return 0


# ============================================================================ the client


class StepServer:
    """Runs steps in driver processes forked from one server (started on first use).

    Safe to use from several threads (each :meth:`run_step` has its own connection); closed
    with :meth:`close`, which stops every driver still running.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None
        self._death_w: int | None = None
        self._ready_r: int | None = None
        self._ready = False
        self._closed = False

    def start(self) -> None:
        """Start the server now (it imports papermill meanwhile)."""
        with self._lock:
            if self._closed:
                raise StepDriverError("StepServerClosed", "the step server is closed")
            if self._proc is not None:
                return
            # Folders of step servers killed with their runner are removed here; this
            # one's server removes its own when its runner goes.
            remove_stale(_FOLDER_PREFIX)
            self._dir = private_dir(_FOLDER_PREFIX)  # private (0700)
            path = os.path.join(self._dir, "socket")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(path)
            listener.listen(128)
            death_r, self._death_w = os.pipe()
            self._ready_r, ready_w = os.pipe()
            try:
                self._proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "jupyter_pipeline.runtime.stepserver",
                        "--listen-fd",
                        str(listener.fileno()),
                        "--ready-fd",
                        str(ready_w),
                        "--folder",
                        self._dir,
                    ],
                    cwd=self._dir,  # nothing of the caller's folder shadows an import
                    # os.environ, not the C environment that Popen passes by default:
                    # readline, once imported, sets LINES and COLUMNS there behind Python's
                    # back, and a driver's environment must be the one kernels would get.
                    env=dict(os.environ),
                    stdin=death_r,
                    pass_fds=(listener.fileno(), ready_w),
                    start_new_session=True,  # Ctrl-C in the terminal is the runner's to handle
                )
            finally:
                os.close(death_r)
                os.close(ready_w)
                listener.close()

    def ready(self) -> bool:
        """Whether the server has done its imports (a step sent now starts at once).

        A runner drives its first steps itself meanwhile: on a busy machine the server's
        imports take seconds, and nothing should wait for them.
        """
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                return False  # gone (or closed): steps are driven in the runner's threads
            if self._ready or self._ready_r is None:
                return self._ready
            readable, _, _ = select.select([self._ready_r], [], [], 0)
            if readable:  # end of file: the server closed its end after importing
                self._ready = True
                os.close(self._ready_r)
                self._ready_r = None
            return self._ready

    def _connect(self) -> socket.socket:
        self.start()
        assert self._dir is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(os.path.join(self._dir, "socket"))
        except OSError as exc:
            sock.close()
            raise StepDriverError("StepServerError", f"the step server is gone: {exc}") from None
        return sock

    def run_step(
        self,
        request: StepRequest,
        *,
        ready: Callable[[], dict[str, str]] | None = None,
        on_kernel: Callable[[int], None] | None = None,
        on_saved: Callable[[list[SavedValue], dict[str, Any]], None] | None = None,
        fork_server: ForkServer | None = None,
    ) -> StepResult:
        """Like :func:`jupyter_pipeline.runtime.run_step`, in a driver process.

        The callbacks run in the calling thread, when the driver reports. ``ready`` raising
        stops the warm-up; the exception is raised again once the driver has shut the
        kernel down.

        Raises:
            StepDriverError: ``run_step`` raised in the driver, or the driver died.
        """
        from jupyter_pipeline.runtime.api import SavedValue, StepResult

        paths = {
            "output_dir": os.path.abspath(request.output_dir),
            "executed_notebook": os.path.abspath(request.executed_notebook),
            "inputs": {k: os.path.abspath(v) for k, v in request.inputs.items()},
        }
        if request.log_path:
            paths["log_path"] = os.path.abspath(request.log_path)
        if request.cwd:
            paths["cwd"] = os.path.abspath(request.cwd)
        request = request.model_copy(update=paths)
        endpoint = fork_server.endpoint() if fork_server is not None else None
        aborted: BaseException | None = None
        with self._connect() as sock:
            _send(
                sock,
                {
                    "request": request.model_dump(mode="json"),
                    "warm": ready is not None,
                    "fork_server": endpoint,
                },
            )
            while True:
                msg = _recv(sock)
                if msg is None:
                    raise StepDriverError(
                        "StepDriverError", f"the driver process of step {request.step} died"
                    )
                if "kernel" in msg:
                    if on_kernel is not None:
                        on_kernel(int(msg["kernel"]))
                elif "saved" in msg:
                    if on_saved is not None:
                        saved = [SavedValue.model_validate(v) for v in msg["saved"]]
                        on_saved(saved, msg["metrics"])
                elif "ready" in msg:
                    try:
                        inputs = ready() if ready is not None else dict(request.inputs)
                    except BaseException as exc:
                        aborted = exc
                        _send(sock, {"abort": str(exc) or type(exc).__name__})
                    else:
                        _send(sock, {"inputs": {k: os.path.abspath(v) for k, v in inputs.items()}})
                elif "retired" in msg:
                    assert fork_server is not None
                    _send(sock, {"fork_server": fork_server.replace(*msg["retired"])})
                elif "result" in msg:
                    return StepResult.model_validate(msg["result"])
                elif "aborted" in msg:
                    if aborted is not None:
                        raise aborted
                    raise StepDriverError("Aborted", msg["aborted"])
                elif "error" in msg:
                    raise StepDriverError(msg["error"], msg["message"])

    def close(self, timeout: float = 10) -> None:
        """Stop the server and every driver still running. Idempotent."""
        ready = self.ready()
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
            if self._death_w is not None:
                with contextlib.suppress(OSError):
                    os.close(self._death_w)  # end of file: the server kills its drivers
                self._death_w = None
            if self._ready_r is not None:
                os.close(self._ready_r)
                self._ready_r = None
        if proc is not None:
            if not ready:
                proc.kill()  # still importing: no driver to stop, nothing to wait for
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
