"""A fork server ("zygote") for step kernels: start kernels by forking a warm interpreter.

A step kernel started with ``python -m ipykernel_launcher`` spends ~0.45 CPU-seconds
importing ipykernel and IPython, then its cells import the notebook's libraries again
(scikit-learn, pandas, matplotlib: 1-2 CPU-seconds a kernel). The zygote is one process
that has already imported both; a kernel is a ``fork()`` of it that then does exactly what
``python -m ipykernel_launcher`` does from there on. Fidelity is the one promise, so the
child is made to look like a fresh interpreter, and the zygote pre-imports only what cannot
change what a kernel computes.

Pre-imports run before fork requests are served: every kernel forked after them shares
them, and the steps of a run replay the same imports anyway.

The client side (:class:`ForkServer`, run in the runner process, in this module) decides
per kernel whether forking is faithful and falls back to a normal spawned kernel
otherwise: a kernel spec other than this interpreter's ipykernel, an environment or working
directory other than the zygote's (pre-imported libraries read both at import), a
non-Linux platform, a zygote that failed (its log's tail is in the error).

Modules:

* this one — the client: :class:`ForkServer`, :class:`ForkedProcess` (a forked kernel
  seen like a ``Popen``), and the zygote's entry point;
* :mod:`.zygote` — the zygote process: its poll loop, forking, becoming a kernel;
* :mod:`.zygote_imports` — what the zygote may pre-import and how it checks that;
* :mod:`.fork_provisioner` — :func:`kernel_manager_class`, the jupyter_client glue.

The zygote runs as ``python -m jupyter_pipeline.runtime.forkserver --listen-fd N``; its
standard input is a pipe from the runner: end of file (the runner exited or closed it)
makes it kill its kernels' process groups, remove its folder and exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from jupyter_pipeline.runtime.fork_provisioner import kernel_manager_class
from jupyter_pipeline.runtime.tmpdirs import private_dir, remove_stale
from jupyter_pipeline.runtime.zygote import _MAX_MSG, _send, main, run_forked_child

__all__ = [
    "ForkError",
    "ForkServer",
    "ForkedProcess",
    "kernel_manager_class",
    "main",
    "run_forked_child",
    "supported",
]

log = logging.getLogger(__name__)

_FOLDER_PREFIX = "jp-forkserver-"  # <tmp>/jp-forkserver-<runner pid>-<random>: socket, log
_LOG_NAME = "zygote.log"  # the zygote's stdout and stderr
_LOG_TAIL, _LOG_LINES = 4000, 20  # how much of a failed zygote's log its error quotes

_MAX_ZYGOTES = 6  # a retired zygote is replaced at most this many times per server


def supported() -> bool:
    """Whether this platform can fork kernels (Linux: fork, pidfd, fd passing)."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and hasattr(os, "pidfd_open")
        and hasattr(socket, "send_fds")
        and hasattr(socket, "SOCK_SEQPACKET")
    )


class ForkError(Exception):
    """A kernel could not be forked (the caller spawns one instead)."""


class ForkedProcess:
    """A forked kernel, seen like a :class:`subprocess.Popen` (what jupyter_client expects).

    The zygote is the kernel's parent: it reports the exit status over this process's
    connection and keeps the zombie (so the pid cannot be reused) until the connection
    closes, which :meth:`poll`/:meth:`wait` do once they have the status.
    """

    stdin = stdout = stderr = None

    def __init__(self, pid: int, conn: socket.socket, args: list[str]) -> None:
        self.pid = pid
        self.args = args
        self.returncode: int | None = None
        self._conn: socket.socket | None = conn
        self._lock = threading.Lock()

    def _read(self, timeout: float | None) -> None:
        with self._lock:
            conn = self._conn
            if self.returncode is not None or conn is None:
                return
            conn.settimeout(timeout)
            try:
                data = conn.recv(_MAX_MSG)
            except (TimeoutError, BlockingIOError):
                return
            except OSError:
                data = b""
            if data:
                self.returncode = int(json.loads(data)["exit"])
            elif _gone(self.pid):  # the zygote died: it cannot tell the status any more
                self.returncode = -signal.SIGKILL
            else:  # orphaned, still running (its parent poller stops it within a second)
                if timeout:
                    time.sleep(min(timeout, 0.1))
                return
            conn.close()
            self._conn = None

    def poll(self) -> int | None:
        """The exit code if the kernel exited, else None (never blocks)."""
        self._read(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the kernel to exit (raises subprocess.TimeoutExpired)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.returncode is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._read(0.5 if left is None else min(left, 0.5))
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the kernel (no-op once it exited, like Popen)."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """SIGTERM the kernel."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the kernel."""
        self.send_signal(signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


class _ZygoteHandle:
    """One zygote process, as the client sees it."""

    def __init__(self, cwd: str, env: dict[str, str], modules: list[str]) -> None:
        # Folders of fork servers whose runner and zygote were both killed (SIGKILL: no
        # one could remove them) are removed here; this one's zygote removes its own.
        remove_stale(_FOLDER_PREFIX)
        self.dir = private_dir(_FOLDER_PREFIX)  # private (0700)
        self.path = os.path.join(self.dir, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.path)
        listener.listen(64)
        death_r, self.death_w = os.pipe()  # our end stays open while we live
        self.log_path = os.path.join(self.dir, _LOG_NAME)
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jupyter_pipeline.runtime.forkserver",
                    "--listen-fd",
                    str(listener.fileno()),
                    "--cwd",
                    cwd,
                    "--preload",
                    ",".join(modules),
                    "--folder",
                    self.dir,
                ],
                cwd=self.dir,
                env=env,
                stdin=death_r,
                stdout=logf,
                stderr=logf,
                pass_fds=(listener.fileno(),),
                start_new_session=True,  # Ctrl-C in the terminal is the runner's to handle
            )
        os.close(death_r)
        listener.close()
        self.retired: tuple[str, str] | None = None

    def connect(self, timeout: float | None = 120) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sock.settimeout(timeout)
        try:
            sock.connect(self.path)
        except OSError as exc:
            sock.close()
            raise ForkError(_with_log(f"fork server unreachable: {exc}", self.path)) from None
        return sock

    def request(self, msg: dict[str, Any], timeout: float | None = 120) -> dict[str, Any]:
        with self.connect(timeout) as sock:
            try:
                _send(sock, msg)
                data = _recv(sock)
            except (ForkError, OSError) as exc:
                raise ForkError(_with_log(str(exc), self.path)) from None
        return json.loads(data)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout: float = 10) -> None:
        with contextlib.suppress(OSError):
            os.close(self.death_w)  # end of file: the zygote kills its kernels and exits
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)  # the socket and the zygote's log


def _with_log(message: str, socket_path: str) -> str:
    """``message`` with the end of the zygote's log (beside its socket), if it wrote one:
    why a zygote died (an import that crashed it, a broken environment) is only there."""
    try:
        with open(os.path.join(os.path.dirname(socket_path), _LOG_NAME), "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL))
            tail = f.read().decode(errors="replace").strip()
    except OSError:
        return message
    if not tail:
        return message
    lines = tail.splitlines()[-_LOG_LINES:]
    return f"{message}; its log ends with:\n" + "\n".join(f"  {line}" for line in lines)


def _recv(sock: socket.socket) -> bytes:
    try:
        data = sock.recv(_MAX_MSG)
    except TimeoutError:
        raise ForkError("the fork server did not answer in time") from None
    except OSError as exc:
        raise ForkError(f"the fork server failed: {exc}") from None
    if not data:
        raise ForkError("the fork server exited")
    return data


class _Attached:
    """A zygote another process started (see :meth:`ForkServer.attach`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.retired: tuple[str, str] | None = None

    def connect(self, timeout: float | None = 120) -> socket.socket:
        return _ZygoteHandle.connect(self, timeout)  # type: ignore[arg-type]

    def alive(self) -> bool:
        return True  # a dead one fails to connect: ForkError, the kernel is spawned

    def close(self) -> None:
        pass  # its owner stops it


class ForkServer:
    """Client of a zygote for one working directory and environment (one pipeline run).

    Started lazily (by :meth:`start` or the first :meth:`fork`), safe to use from several
    threads, closed with :meth:`close` (which kills any kernel still alive that it forked).

    Args:
        cwd: Working directory of the kernels (the notebook's folder).
        env: Environment of the kernels (default: this process's, at construction).
        modules: Modules to pre-import (top-level imports of the steps' code).
    """

    def __init__(
        self, cwd: str, env: dict[str, str] | None = None, modules: Iterable[str] = ()
    ) -> None:
        self.cwd = os.path.abspath(cwd)
        self.env = dict(os.environ if env is None else env)
        self.env["JPY_PARENT_PID"] = str(os.getpid())  # as jupyter_client's launcher sets it
        self.modules = list(dict.fromkeys(modules))
        self.excluded: dict[str, str] = {}
        self._zygotes: list[_ZygoteHandle] = []
        self._lock = threading.Lock()
        self._closed = False
        self.failed: str | None = None
        # Attached to another process's zygote (a step driver): asked for a replacement
        # when that zygote retires, instead of starting one.
        self._on_retired: Callable[[str, str, str], str | None] | None = None

    @classmethod
    def attach(
        cls,
        path: str,
        cwd: str,
        env: dict[str, str],
        on_retired: Callable[[str, str, str], dict[str, Any] | None] | None = None,
    ) -> ForkServer:
        """A client of the zygote at ``path``, started by another process's ForkServer
        (see :meth:`endpoint`). Closing it leaves that zygote running. When the zygote
        retires, ``on_retired(module, why, path)`` returns the replacement's endpoint (or
        None: kernels are spawned).
        """
        server = cls(cwd, env)
        server.env["JPY_PARENT_PID"] = str(os.getpid())  # the kernels' launcher is this one
        server._zygotes = [_Attached(path)]  # type: ignore[list-item]

        def replacement(module: str, why: str, old: str) -> str | None:
            endpoint = on_retired(module, why, old) if on_retired is not None else None
            if not endpoint:
                return None
            return str(endpoint["path"])

        server._on_retired = replacement
        return server

    def endpoint(self) -> dict[str, Any] | None:
        """Where the current zygote listens, for :meth:`attach` in another process (starts
        it, or a replacement of a retired one), or None when it cannot start."""
        try:
            zygote = self._current()
        except ForkError:
            return None
        return {"path": zygote.path, "cwd": self.cwd, "env": self.env}

    def replace(self, module: str, why: str, path: str) -> dict[str, Any] | None:
        """Another process found the zygote at ``path`` retired (on ``module``): retire it
        here and return the replacement's endpoint."""
        with self._lock:
            zygote = next((z for z in self._zygotes if z.path == path), None)
        if zygote is not None and zygote.retired is None:
            self._retire(zygote, module, why)
        return self.endpoint()

    # ---------------------------------------------------------------- lifecycle

    def _current(self) -> _ZygoteHandle:
        with self._lock:
            if self._closed:
                raise ForkError("the fork server is closed")
            if self.failed is not None:
                raise ForkError(self.failed)
            zygote = self._zygotes[-1] if self._zygotes else None
            if zygote is not None and zygote.retired is None and zygote.alive():
                return zygote
            if self._on_retired is not None:
                assert zygote is not None
                path = self._on_retired(*(zygote.retired or ("", "")), zygote.path)
                if path is None:
                    self.failed = "the fork server retired and has no replacement"
                    raise ForkError(self.failed)
                self._zygotes.append(_Attached(path))  # type: ignore[arg-type]
                return self._zygotes[-1]
            if zygote is not None and zygote.retired is None:
                self.failed = _with_log(
                    f"the fork server exited (code {zygote.proc.returncode})", zygote.path
                )
                raise ForkError(self.failed)
            if len(self._zygotes) >= _MAX_ZYGOTES:
                self.modules = []  # pre-imports kept misbehaving: only the kernel's own
            modules = [m for m in self.modules if m not in self.excluded]
            try:
                zygote = _ZygoteHandle(self.cwd, self.env, modules)
            except (OSError, ForkError) as exc:
                self.failed = f"the fork server did not start: {exc}"
                raise ForkError(self.failed) from None
            self._zygotes.append(zygote)
            return zygote

    def start(self) -> None:
        """Start the zygote now (it imports ipykernel and the modules meanwhile)."""
        with contextlib.suppress(ForkError):
            self._current()

    def status(self) -> dict[str, Any]:
        """What the current zygote pre-imported, skipped, or retired on (a retired one is
        replaced at the next call)."""
        zygote = self._current()
        reply = zygote.request({"op": "status"})
        if reply.get("dirty"):
            self._retire(zygote, *reply["dirty"])
        return reply

    def _retire(self, zygote: _ZygoteHandle, module: str, why: str) -> None:
        with self._lock:
            zygote.retired = (module, why)
            self.excluded[module] = why
        log.debug("fork server: not pre-importing %s: %s", module, why)

    def close(self) -> None:
        """Stop every zygote (their remaining kernels are killed). Idempotent."""
        with self._lock:
            self._closed = True
            zygotes, self._zygotes = self._zygotes, []
        for zygote in zygotes:
            zygote.close()

    def __enter__(self) -> ForkServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- forking

    def unfit(self, cmd: Sequence[str], env: dict[str, str] | None, cwd: str | None) -> str | None:
        """Why a kernel with this command, environment and cwd must be spawned, or None."""
        if not supported():
            return "this platform cannot fork kernels"
        if len(cmd) < 3 or list(cmd[1:3]) != ["-m", "ipykernel_launcher"]:
            return f"the kernel command is not ipykernel's: {list(cmd[:3])}"
        if cmd[0] != sys.executable:
            return f"the kernel runs another interpreter: {cmd[0]}"
        if os.path.abspath(cwd or os.getcwd()) != self.cwd:
            return f"working directory {cwd} is not the fork server's {self.cwd}"
        pythonpath = self.env.get("PYTHONPATH", "")
        if any(p and not os.path.isabs(p) for p in pythonpath.split(os.pathsep)):
            return "PYTHONPATH has relative entries (resolved against the start directory)"
        kernel_env = dict(os.environ if env is None else env)
        kernel_env["JPY_PARENT_PID"] = str(os.getpid())
        if kernel_env != self.env:
            keys = sorted(
                k for k in set(kernel_env) | set(self.env) if kernel_env.get(k) != self.env.get(k)
            )
            return f"environment differs from the fork server's: {', '.join(keys[:5])}"
        return None

    def fork(
        self, cmd: Sequence[str], *, cwd: str | None = None, stdout: Any = None, stderr: Any = None
    ) -> ForkedProcess:
        """Fork a kernel running ``cmd`` (``python -m ipykernel_launcher ...``).

        ``stdout``/``stderr``: files (or descriptors) for the kernel's output; None
        inherits this process's. Call :meth:`unfit` first.

        Raises:
            ForkError: No kernel was forked (spawn one instead).
        """
        out_fd = _fileno(stdout, 1)
        err_fd = _fileno(stderr, 2)
        msg = {"op": "fork", "argv": list(cmd), "cwd": os.path.abspath(cwd or self.cwd)}
        for _ in range(_MAX_ZYGOTES + 1):
            zygote = self._current()
            sock = zygote.connect()
            try:
                _send(sock, msg, [out_fd, err_fd])
                reply = json.loads(_recv(sock))
            except ForkError as exc:
                sock.close()
                raise ForkError(_with_log(str(exc), zygote.path)) from None
            except OSError as exc:
                sock.close()
                raise ForkError(_with_log(f"the fork server failed: {exc}", zygote.path)) from None
            if "pid" in reply:
                sock.settimeout(None)
                return ForkedProcess(int(reply["pid"]), sock, list(cmd))
            sock.close()
            if "retired" in reply:
                self._retire(zygote, reply["retired"], reply["why"])
                continue
            raise ForkError(str(reply.get("error", reply)))
        raise ForkError("the fork server kept retiring")


def _fileno(f: Any, default: int) -> int:
    if f is None:
        return default
    if isinstance(f, int):
        return f
    f.flush()
    return f.fileno()


if __name__ == "__main__":
    sys.exit(main())
