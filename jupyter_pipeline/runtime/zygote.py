"""The fork server process ("zygote"): pre-import, then fork kernels on request.

It runs as ``python -m jupyter_pipeline.runtime.forkserver --listen-fd N`` (see
:func:`main`), single-threaded, in one poll loop: pre-imports first (:mod:`.zygote_imports`),
then fork requests from :class:`~jupyter_pipeline.runtime.forkserver.ForkServer` clients
over a Unix socket. A forked child is made to look like a fresh interpreter: its own
session (the kernel leads its own process group, as jupyter_client's
``start_new_session``), the given stdout/stderr, a closed stdin pipe, the same ``sys.argv``,
``sys.orig_argv``, ``sys.path`` and a fresh ``__main__`` as ``python -m``, a reseeded
numpy global RNG (Python's ``random`` reseeds itself at fork), fresh import caches.

Its standard input is a pipe from the runner: end of file (the runner exited or closed
it) makes it kill its kernels' process groups, remove its own folder (socket and log) and
exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from jupyter_pipeline.runtime.zygote_imports import _Preloader, _replay_after_shell

_MAX_MSG = 1 << 20


def _send(sock: socket.socket, obj: Any, fds: Sequence[int] = ()) -> None:
    data = json.dumps(obj).encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


# ============================================================================ the zygote


def _reply(conn: socket.socket, obj: Any) -> None:
    with contextlib.suppress(OSError):  # the requester may be gone (or not waiting)
        _send(conn, obj)


class _Child:
    def __init__(self, pid: int, conn: socket.socket | None, pidfd: int) -> None:
        self.pid = pid
        self.conn = conn  # the requester's connection: told the exit status, then closed
        self.pidfd = pidfd
        self.status: int | None = None  # exit code once exited (kept a zombie until reaped)


class _Zygote(_Preloader):
    """The fork server process: single-threaded, one poll loop."""

    def __init__(self, listener: socket.socket) -> None:
        super().__init__()
        self.listener = listener
        self.conns: dict[int, socket.socket] = {}
        self.children: dict[int, _Child] = {}  # pidfd -> child
        self.exiting = False
        self.own_modules = {m for m in sys.modules if m.split(".")[0] == "jupyter_pipeline"}

    # ---------------------------------------------------------------- the loop

    def serve(self) -> None:
        poller = select.poll()
        poller.register(0, select.POLLIN)
        poller.register(self.listener.fileno(), select.POLLIN)
        while not self.exiting:
            # Pre-imports come first: every kernel forked after them shares them, one forked
            # before would import them again itself (the steps replay the same imports).
            # Requests wait meanwhile (poll is level-triggered: they are seen again).
            busy = bool(self.pending) and self.dirty is None
            for fd, _ in poller.poll(0 if busy else 1000):
                if fd == 0:
                    if not os.read(0, 4096):
                        self.exiting = True  # the runner is gone or closed the pipe
                elif fd in self.children:
                    self.child_exited(self.children[fd], poller)
                elif busy:
                    continue
                elif fd == self.listener.fileno():
                    conn, _ = self.listener.accept()
                    # Non-blocking: an event may be stale (its fd closed and reused since).
                    conn.setblocking(False)
                    self.conns[conn.fileno()] = conn
                    poller.register(conn.fileno(), select.POLLIN)
                elif fd in self.conns:
                    self.handle(self.conns[fd], poller)
            if busy and not self.exiting:
                self.preload_one(self.pending.pop(0))
        self.stop_children()

    def handle(self, conn: socket.socket, poller: Any) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(conn, _MAX_MSG, 2)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            self.drop(conn, poller)
            return
        msg = json.loads(data)
        op = msg.get("op")
        if op != "fork":
            for fd in fds:
                os.close(fd)
        if op == "fork":
            if self.dirty is not None:
                for fd in fds:
                    os.close(fd)
                _reply(conn, {"retired": self.dirty[0], "why": self.dirty[1]})
                return
            self.fork(conn, msg, fds, poller)
        elif op == "status":
            _reply(
                conn,
                {
                    "loaded": self.loaded,
                    "skipped": self.skipped,
                    "pending": self.pending,
                    "dirty": list(self.dirty) if self.dirty else None,
                    "children": sorted(c.pid for c in self.children.values()),
                },
            )

    def drop(self, conn: socket.socket, poller: Any) -> None:
        """A requester closed its connection: reap its kernel if that already exited."""
        fd = conn.fileno()
        poller.unregister(fd)
        del self.conns[fd]
        for pidfd, child in list(self.children.items()):
            if child.conn is conn:
                child.conn = None
                if child.status is not None:
                    self.reap(pidfd, poller)
        conn.close()

    def child_exited(self, child: _Child, poller: Any) -> None:
        # Keep the zombie until the requester has read the status: its pid (and process
        # group id) cannot be reused before, so signals the runner sends stay safe.
        info = os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        if info is None:
            return
        if info.si_code == os.CLD_EXITED:
            child.status = info.si_status
        else:
            child.status = -info.si_status
        poller.unregister(child.pidfd)
        if child.conn is None:
            self.reap(child.pidfd, poller)
            return
        with contextlib.suppress(OSError):
            _send(child.conn, {"exit": child.status})

    def reap(self, pidfd: int, poller: Any) -> None:
        child = self.children.pop(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child.pid, 0)
        os.close(pidfd)

    def stop_children(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(OSError):
                os.killpg(child.pid, signal.SIGKILL)
        for child in self.children.values():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child.pid, 0)

    # ---------------------------------------------------------------- fork

    def fork(self, conn: socket.socket, msg: dict[str, Any], fds: list[int], poller: Any) -> None:
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            _reply(conn, {"error": "expected stdout and stderr descriptors"})
            return
        sys.stdout.flush()
        sys.stderr.flush()
        sync_r, sync_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the kernel

            def kernel() -> int:
                os.close(sync_r)
                os.setsid()  # before the runner learns the pid: it signals the group
                os.write(sync_w, b"k")
                os.close(sync_w)
                return self.become_kernel(msg, fds)

            run_forked_child(kernel)
        os.close(sync_w)
        for fd in fds:
            os.close(fd)
        started = os.read(sync_r, 1)
        os.close(sync_r)
        pidfd = os.pidfd_open(pid)
        child = _Child(pid, conn, pidfd)
        self.children[pidfd] = child
        poller.register(pidfd, select.POLLIN)
        _reply(conn, {"pid": pid} if started else {"pid": pid, "warning": "child died early"})

    def become_kernel(self, msg: dict[str, Any], fds: list[int]) -> int:
        """In the forked child: turn into ``python -m ipykernel_launcher ARGS`` and run it."""
        import importlib
        import runpy
        import types

        # Nothing of the server stays open in the kernel.
        self.listener.close()
        for conn in self.conns.values():
            conn.close()
        for pidfd in self.children:
            with contextlib.suppress(OSError):
                os.close(pidfd)
        # Standard streams as jupyter_client's launcher sets them: stdin a pipe whose write
        # end is closed, stdout/stderr the given files.
        r, w = os.pipe()
        os.close(w)
        os.dup2(r, 0)
        os.close(r)
        os.dup2(fds[0], 1)
        os.dup2(fds[1], 2)
        for fd in set(fds):
            os.close(fd)
        os.chdir(msg["cwd"])
        if "numpy.random" in sys.modules:
            # A fresh kernel seeds numpy's global RNG from the OS at import; `random`
            # reseeds itself at fork.
            sys.modules["numpy.random"].seed()
        # The kernel watches its parent: the zygote, which exits when the runner does.
        from ipykernel.kernelapp import IPKernelApp

        IPKernelApp.class_traits()["parent_handle"].default_value = os.getppid()
        if self.replays:
            _replay_after_shell(IPKernelApp, self.replays)
        argv = list(msg["argv"])
        sys.path[:] = self.base_path
        if not sys.flags.safe_path:
            sys.path[0] = os.getcwd()  # `python -m` puts the working directory first
        for key in ("", os.getcwd(), self.cwd):
            sys.path_importer_cache.pop(key, None)
        importlib.invalidate_caches()
        sys.argv[:] = ["-m", *argv[3:]]
        sys.orig_argv[:] = argv
        for name in self.own_modules:
            sys.modules.pop(name, None)
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = sys.modules["builtins"]
        main.__dict__["__annotations__"] = {}  # noqa: RUF063 (a fresh __main__ has it)
        sys.modules["__main__"] = main
        code = 0
        try:
            runpy._run_module_as_main(argv[2], alter_argv=True)  # type: ignore[attr-defined]
        except SystemExit as exc:
            code = _exit_code(exc)
        finally:
            # As the interpreter does at exit: join non-daemon threads, run atexit.
            with contextlib.suppress(BaseException):
                threading._shutdown()  # type: ignore[attr-defined]
            import atexit

            atexit._run_exitfuncs()
        return code


def run_forked_child(body: Callable[[], int]) -> NoReturn:
    """In a child just forked: run ``body`` and ``os._exit`` with the code it returns (1 if
    it raises, the traceback printed). Never returns: the child must not unwind into the
    parent's stack (its ``finally`` blocks and ``atexit`` handlers are the parent's)."""
    code = 1
    try:
        code = body()
    except BaseException:
        import traceback

        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run a zygote (``python -m jupyter_pipeline.runtime.forkserver --listen-fd N``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jupyter_pipeline.runtime.forkserver")
    parser.add_argument("--listen-fd", type=int, required=True, help="listening Unix socket")
    parser.add_argument("--cwd", required=True, help="the kernels' working directory")
    parser.add_argument("--preload", default="", help="comma-separated modules to pre-import")
    parser.add_argument("--folder", help="this server's folder (socket, log): removed at exit")
    args = parser.parse_args(argv)
    # Started in an empty directory, so that nothing of the notebook's folder could shadow
    # what this process imported so far (ipykernel_launcher, too, takes its folder off
    # sys.path before importing). From here on, sys.path is what `python -m` gives a kernel
    # started in the notebook's folder.
    os.chdir(args.cwd)
    if not sys.flags.safe_path:
        sys.path[0] = os.getcwd()
    listener = socket.socket(fileno=args.listen_fd)
    listener.set_inheritable(False)
    zygote = _Zygote(listener)
    zygote.pending = [m for m in args.preload.split(",") if m]
    zygote.import_kernel_modules()
    zygote.serve()
    # The runner is gone or closed the pipe: a runner that was killed cannot remove the
    # folder. Only after a clean end: a zygote that crashed leaves its log for the error.
    if args.folder:
        shutil.rmtree(args.folder, ignore_errors=True)
    return 0
