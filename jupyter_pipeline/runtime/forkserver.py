"""A fork server ("zygote") for step kernels: start kernels by forking a warm interpreter.

A step kernel started with ``python -m ipykernel_launcher`` spends ~0.45 CPU-seconds
importing ipykernel and IPython, then its cells import the notebook's libraries again
(scikit-learn, pandas, matplotlib: 1-2 CPU-seconds a kernel). The zygote is one process
that has already imported both; a kernel is a ``fork()`` of it that then does exactly what
``python -m ipykernel_launcher`` does from there on.

Fidelity is the one promise, so the child is made to look like a fresh interpreter: its
own session (the kernel leads its own process group, as jupyter_client's
``start_new_session``), the given stdout/stderr, a closed stdin pipe, the same ``sys.argv``,
``sys.orig_argv``, ``sys.path`` and a fresh ``__main__`` as ``python -m``, a reseeded
numpy global RNG (Python's ``random`` reseeds itself at fork), fresh import caches.

What the zygote pre-imports is limited to what cannot change what a kernel computes:

* only modules that resolve outside the notebook's folder (never the user's own modules,
  which may change), resolved with the ``sys.path`` a kernel's cells see;
* modules are imported as a kernel cell would import them: with that ``sys.path``, a bare
  ``__main__``, and ``sys.stdout``/``sys.stderr`` stand-ins that write to the kernel's
  streams (a logging handler made at import writes where it would in a kernel);
* a module whose import prints, warns, starts a thread, keeps a file open (kernels would
  share its offset), reads ``sys.argv`` (each kernel has its own), changes ``sys.path``,
  import hooks, signal handlers or interpreter hooks, or fails, must not be pre-imported:
  that output or effect belongs to the step that imports it. Nor may one whose import asks
  for the IPython shell (``get_ipython()``), which only a kernel has — except where that
  question is known and asked again in the forked kernel once its shell exists (pandas
  picks its ``display.max_columns`` default so). As an import cannot be undone, the zygote
  then *retires* (forks no more kernels) and the client starts a new zygote that leaves
  that module out.

Pre-imports run before fork requests are served: every kernel forked after them shares
them, and the steps of a run replay the same imports anyway.

The client side (:class:`ForkServer`, run in the runner process) decides per kernel whether
forking is faithful and falls back to a normal spawned kernel otherwise: a kernel spec
other than this interpreter's ipykernel, an environment or working directory other than
the zygote's (pre-imported libraries read both at import), a non-Linux platform, a zygote
that failed. :func:`kernel_manager_class` plugs it into jupyter_client as a kernel
provisioner (a :class:`jupyter_client.provisioning.LocalProvisioner` whose process is the
forked kernel).

The zygote runs as ``python -m jupyter_pipeline.runtime.forkserver --listen-fd N``; its
standard input is a pipe from the runner: end of file (the runner exited or closed it)
makes it kill its kernels' process groups and exit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NoReturn

__all__ = [
    "ForkError",
    "ForkServer",
    "ForkedProcess",
    "kernel_manager_class",
    "supported",
]

log = logging.getLogger(__name__)

_MAX_MSG = 1 << 20
# Imported by every fresh kernel while it starts, in this order, whatever the notebook: the
# zygote imports them first. None of them depends on the working directory or on state an
# earlier kernel-start step sets up (the environment they read is the kernel's own).
_KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.debugger",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.oinspect",
    "IPython.core.logger",
    "IPython.extensions.storemagic",
)
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


class _Zygote:
    """The fork server process: single-threaded, one poll loop."""

    def __init__(self, listener: socket.socket) -> None:
        self.listener = listener
        self.base_path = list(sys.path)  # what `python -m` gave this process: a kernel's too
        self.cwd = os.getcwd()
        self.conns: dict[int, socket.socket] = {}
        self.children: dict[int, _Child] = {}  # pidfd -> child
        self.pending: list[str] = []
        self.loaded: list[str] = []
        self.skipped: dict[str, str] = {}
        self.dirty: tuple[str, str] | None = None  # (module, why): retired
        self.exiting = False
        self.asked_shell: list[str] | None = None  # who called get_ipython, while pre-importing
        self.argv_read: list[bool] = []  # sys.argv was looked at while pre-importing
        self.replays: dict[str, Any] = {}  # import-time shell questions to ask again in a kernel
        self.own_modules = {m for m in sys.modules if m.split(".")[0] == "jupyter_pipeline"}

    # ---------------------------------------------------------------- pre-imports

    def import_kernel_modules(self) -> None:
        import importlib

        # ipykernel_launcher imports the kernel without the working directory on sys.path.
        sys.path[:] = self.base_path[1:] if not sys.flags.safe_path else self.base_path

        # As ipykernel does before running any cell (matplotlib reads it at import).
        if not os.environ.get("MPLBACKEND"):
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        try:
            for name in _KERNEL_MODULES:
                try:
                    importlib.import_module(name)
                except Exception as exc:  # a kernel would fail (or do without) the same way
                    print(f"forkserver: {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.path[:] = self.base_path
        sys.stderr.flush()

    def _kernel_path(self) -> list[str]:
        """``sys.path`` as a kernel's cells see it: IPython inserts '' (the working
        directory) before the first site-packages (InteractiveShellApp.init_path)."""
        path = list(self.base_path)
        if not sys.flags.safe_path and path and os.path.abspath(path[0]) == self.cwd:
            del path[0]  # ipykernel_launcher removes the script directory
        if "" not in path:
            idx = next(
                (
                    i
                    for i, p in enumerate(path)
                    if os.path.basename(p) in ("site-packages", "dist-packages")
                ),
                0,
            )
            path.insert(idx, "")
        return path

    def _in_cwd(self, top: str) -> bool:
        """Whether the top-level module ``top`` may be found in the working directory
        (a folder of that name counts, even one IPython would pass over)."""
        from importlib.machinery import all_suffixes

        entries = set(os.listdir(self.cwd))
        if top in entries and os.path.isdir(os.path.join(self.cwd, top)):
            return True
        return any(top + suffix in entries for suffix in all_suffixes())

    def preload_one(self, name: str) -> None:
        """Import one module, or skip it; retire if its import had visible effects."""
        import importlib
        import importlib.util
        import warnings

        top = name.split(".")[0]
        if name in sys.modules:  # a kernel imports it while it starts (json, os…)
            self.loaded.append(name)
            return
        if self._in_cwd(top):
            self.skipped[name] = "found in the notebook's folder"
            return
        saved_path = list(sys.path)
        sys.path[:] = self._kernel_path()
        try:
            if top not in sys.modules and importlib.util.find_spec(top) is None:
                self.skipped[name] = "not installed"
                return
        except (ImportError, ValueError) as exc:
            self.skipped[name] = f"{type(exc).__name__}: {exc}"
            return
        finally:
            sys.path[:] = saved_path

        before = set(sys.modules)
        hooks = _hooks()
        sys.stdout.flush()
        sys.stderr.flush()
        out = tempfile.TemporaryFile()  # noqa: SIM115 (closed in the finally below)
        saved_fds = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        why: str | None = None
        self.asked_shell = []
        self.argv_read.clear()
        fds_before = _open_fds()
        undo = self._kernel_like()
        try:
            expected_path = list(sys.path)
            with warnings.catch_warnings(record=True) as caught:
                try:
                    importlib.import_module(name)
                except ModuleNotFoundError as exc:
                    if exc.name != name:
                        why = f"import failed: {exc}"
                    else:  # `from pkg import attr`: attr is no module (its parents imported)
                        self.skipped[name] = "not a module"
                except BaseException as exc:
                    why = f"import failed: {type(exc).__name__}: {exc}"
                # Filters a library installs at import stay, as in a kernel that imports it
                # (catch_warnings would restore the old ones).
                filters = list(warnings.filters)
            warnings.filters[:] = filters  # type: ignore[index]
            warnings._filters_mutated()  # type: ignore[attr-defined]
            sys.stdout.flush()
            sys.stderr.flush()
            if why is None and self.argv_read:
                why = "read sys.argv at import (each kernel has its own)"
            if why is None:
                why = self._shell_replays(self.asked_shell)
            if why is None:
                if caught:
                    w = caught[0]
                    why = f"warned at import: {w.category.__name__}: {w.message}"
                elif os.fstat(out.fileno()).st_size:
                    why = "printed at import"
                elif sys.path != expected_path:
                    why = "changed sys.path"
                elif _hooks() != hooks:
                    why = "changed import hooks, signal handlers or interpreter hooks"
                elif threading.active_count() > 1:
                    why = "started a thread"
                elif os.getcwd() != self.cwd:
                    why = "changed the working directory"
                elif _open_fds() - fds_before:
                    why = "kept a file or socket open (forked kernels would share it)"
                else:
                    why = self._user_module(set(sys.modules) - before)
        finally:
            undo()
            self.asked_shell = None
            os.dup2(saved_fds[0], 1)
            os.dup2(saved_fds[1], 2)
            for fd in saved_fds:
                os.close(fd)
            out.close()
        if why is not None:
            self.dirty = (name, why)
            print(f"forkserver: retiring: {name} {why}", file=sys.stderr, flush=True)
        elif name not in self.skipped:
            self.loaded.append(name)

    def _kernel_like(self) -> Any:
        """Make what a module can look at while it is imported what a kernel cell would
        show it, as far as the kernel's start does not decide it; return the undo.

        ``sys.path`` as a cell sees it; ``__main__`` without ``__file__`` (IPython's user
        module has none); ``sys.stdout``/``sys.stderr`` proxies that write to whatever the
        streams are when written to (a logging handler made at import writes to the
        kernel's streams, as if made there); ``get_ipython`` (the builtin and IPython's)
        recording that it was called: the answer depends on the kernel's shell, which does
        not exist here, so such a module is not pre-imported.
        """
        import builtins
        import types

        saved = (
            list(sys.path),
            sys.modules.get("__main__"),
            sys.stdout,
            sys.stderr,
            builtins.__dict__.get("get_ipython"),
            sys.argv,
        )
        sys.path[:] = self._kernel_path()
        main = types.ModuleType("__main__")
        main.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = main
        sys.stdout = _StreamProxy("stdout", saved[2])  # type: ignore[assignment]
        sys.stderr = _StreamProxy("stderr", saved[3])  # type: ignore[assignment]
        # Each kernel has its own (its connection file): reading it at import is recorded.
        sys.argv = _WatchedList(self.argv_read, sys.argv)

        def recorder(original: Any) -> Any:
            def get_ipython() -> Any:
                if self.asked_shell is not None:  # only while pre-importing
                    caller = sys._getframe(1).f_globals.get("__name__", "?")
                    self.asked_shell.append(str(caller))
                if original is None:
                    raise NameError("name 'get_ipython' is not defined")
                return original()

            return functools.wraps(original)(get_ipython) if original else get_ipython

        patched: list[tuple[Any, Any]] = []
        for mod_name in ("IPython", "IPython.core.getipython"):
            mod = sys.modules.get(mod_name)
            if mod is not None and hasattr(mod, "get_ipython"):
                patched.append((mod, mod.get_ipython))
                mod.get_ipython = recorder(mod.get_ipython)  # type: ignore[attr-defined]
        if saved[4] is None:
            builtins.get_ipython = recorder(None)  # type: ignore[attr-defined]

        def undo() -> None:
            sys.path[:] = saved[0]
            if saved[1] is not None:
                sys.modules["__main__"] = saved[1]
            sys.stdout, sys.stderr = saved[2], saved[3]
            sys.argv = saved[5]
            for mod, original in patched:
                mod.get_ipython = original
            if saved[4] is None:
                builtins.__dict__.pop("get_ipython", None)

        return undo

    def _shell_replays(self, callers: list[str]) -> str | None:
        """Accept a module that asked for the IPython shell at import only where that
        decision is known and can be taken again in the kernel, once its shell exists."""
        for caller in dict.fromkeys(callers):
            check = _REPLAYS.get(caller)
            found = check[0]() if check else None
            if found is None:
                return f"asked for the IPython shell at import ({caller})"
            self.replays[caller] = found
        return None

    def _user_module(self, new: Iterable[str]) -> str | None:
        for mod_name in new:
            if "." in mod_name:
                continue
            spec = getattr(sys.modules.get(mod_name), "__spec__", None)
            if spec is None:
                continue
            locations = list(spec.submodule_search_locations or [])
            where = [os.path.dirname(p) for p in locations if os.path.isabs(p)]
            if spec.has_location and spec.origin and not locations:
                where.append(os.path.dirname(spec.origin))
            if self.cwd in where:
                return f"imported {mod_name} from the notebook's folder"
        return None

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


# ---------------------------------------------------------------- shell-dependent imports
#
# A library may decide something at import by asking for the IPython shell, which exists in
# a kernel but not in the zygote. Known cases are taken again in the forked kernel once its
# shell exists (before any cell runs); each is (check in the zygote after the import ->
# what the replay needs or None, replay in the kernel). A check that fails (the library's
# code changed) keeps the module from being pre-imported.

_PANDAS_MAX_COLS = re.compile(
    r"if is_terminal\(\):\s*max_cols = (\d+)[^\n]*\s*else:\s*max_cols = (\d+)[^\n]*\s*"
    r"cf\.register_option\(\s*\"max_columns\",\s*max_cols,"
)


def _pandas_check() -> Any:
    """pandas.core.config_init picks ``display.max_columns``' default with is_terminal():
    0 in a terminal (what it found here), 20 in a kernel."""
    import inspect

    init = sys.modules.get("pandas.core.config_init")
    cf = sys.modules.get("pandas._config.config")
    try:
        match = _PANDAS_MAX_COLS.search(inspect.getsource(init))  # type: ignore[arg-type]
        option = cf._registered_options["display.max_columns"]  # type: ignore[union-attr]
        root, key = cf._get_root("display.max_columns")  # type: ignore[union-attr]
    except (OSError, TypeError, KeyError, AttributeError):
        return None
    if match is None or not (option.defval == root[key] == int(match[1])):
        return None
    return int(match[2])


def _pandas_replay(in_kernel: int) -> None:
    init = sys.modules["pandas.core.config_init"]
    cf = sys.modules["pandas._config.config"]
    if init.is_terminal():  # type: ignore[attr-defined]
        return  # the same answer as in the zygote
    key = "display.max_columns"
    options = cf._registered_options  # type: ignore[attr-defined]
    options[key] = options[key]._replace(defval=in_kernel)
    root, leaf = cf._get_root(key)  # type: ignore[attr-defined]
    root[leaf] = in_kernel


_REPLAYS: dict[str, tuple[Any, Any]] = {
    "pandas.core.config_init": (_pandas_check, _pandas_replay),
}


def _replay_after_shell(app_class: Any, replays: dict[str, Any]) -> None:
    """In the forked kernel: once the app has its shell, ask the recorded questions again,
    as a cell would (get_ipython is a builtin while a cell runs)."""
    original = app_class.init_shell

    def init_shell(app: Any) -> None:
        app_class.init_shell = original
        original(app)
        if app.shell is None:
            return
        with app.shell.builtin_trap:
            for caller, found in replays.items():
                _REPLAYS[caller][1](found)

    app_class.init_shell = init_shell


class _WatchedList(list):  # type: ignore[type-arg]
    """A list that notes being read (``sys.argv`` while pre-importing)."""

    def __init__(self, note: list[bool], items: Iterable[Any]) -> None:
        super().__init__(items)
        self._note = note

    def __getitem__(self, index: Any) -> Any:
        self._note.append(True)
        return super().__getitem__(index)

    def __iter__(self) -> Any:
        self._note.append(True)
        return super().__iter__()

    def __len__(self) -> int:
        self._note.append(True)
        return super().__len__()

    def __contains__(self, item: object) -> bool:
        self._note.append(True)
        return super().__contains__(item)


class _StreamProxy:
    """``sys.stdout``/``sys.stderr`` while the zygote pre-imports: writes go to whatever
    ``sys.<name>`` is at the time (in a kernel: ipykernel's streams)."""

    def __init__(self, name: str, fallback: Any) -> None:
        self._name = name
        self._fallback = fallback

    def _target(self) -> Any:
        stream = getattr(sys, self._name)
        return self._fallback if stream is self else stream

    def write(self, data: str) -> int:
        return self._target().write(data)

    def flush(self) -> None:
        self._target().flush()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._target(), attr)


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


def _open_fds() -> set[str]:
    try:
        return set(os.listdir("/proc/self/fd"))
    except OSError:
        return set()


def _hooks() -> tuple[Any, ...]:
    sigs = []
    for s in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError):
            sigs.append((s, signal.getsignal(s)))
    return (
        list(sys.meta_path),
        list(sys.path_hooks),
        sigs,
        sys.excepthook,
        sys.displayhook,
        sys.breakpointhook,
        sys.gettrace(),
        sys.getprofile(),
        threading.excepthook,
    )


def main(argv: list[str] | None = None) -> int:
    """Run a zygote (``python -m jupyter_pipeline.runtime.forkserver --listen-fd N``)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m jupyter_pipeline.runtime.forkserver")
    parser.add_argument("--listen-fd", type=int, required=True, help="listening Unix socket")
    parser.add_argument("--cwd", required=True, help="the kernels' working directory")
    parser.add_argument("--preload", default="", help="comma-separated modules to pre-import")
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
    return 0


# ============================================================================ the client


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
        self.dir = tempfile.mkdtemp(prefix="jp-forkserver-")  # private (0700)
        self.path = os.path.join(self.dir, "socket")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(self.path)
        listener.listen(64)
        death_r, self.death_w = os.pipe()  # our end stays open while we live
        self.log_path = os.path.join(self.dir, "zygote.log")
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
            raise ForkError(f"fork server unreachable: {exc}") from None
        return sock

    def request(self, msg: dict[str, Any], timeout: float | None = 120) -> dict[str, Any]:
        with self.connect(timeout) as sock:
            _send(sock, msg)
            data = _recv(sock)
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
                self.failed = f"the fork server exited (code {zygote.proc.returncode})"
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
            except (ForkError, OSError) as exc:
                sock.close()
                raise ForkError(str(exc)) from None
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


# ============================================================================ jupyter_client


@functools.cache  # one class for every kernel (jupyter_client is imported on first use)
def _provisioner_class() -> type:
    from jupyter_client.provisioning import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
        """LocalProvisioner whose kernel process is forked from a :class:`ForkServer`.

        Falls back to LocalProvisioner's own launch (a spawned kernel) when forking would
        not be faithful; the reason is kept in ``fork_fallback`` and logged at debug level.
        """

        fork_server: ForkServer | None = None
        fork_fallback: str | None = None

        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            server = self.fork_server
            extra = set(kwargs) - {
                "env",
                "cwd",
                "stdout",
                "stderr",
                "independent",
                "kernel_id",
                "extra_arguments",
            }
            reason: str | None
            if server is None:
                reason = "no fork server"
            elif extra:
                reason = f"launch options the fork server does not handle: {sorted(extra)}"
            elif kwargs.get("independent"):
                reason = "independent kernel"
            else:
                reason = server.unfit(cmd, kwargs.get("env"), kwargs.get("cwd"))
            if reason is None:
                assert server is not None
                try:
                    process = server.fork(
                        cmd,
                        cwd=kwargs.get("cwd"),
                        stdout=kwargs.get("stdout"),
                        stderr=kwargs.get("stderr"),
                    )
                except ForkError as exc:
                    reason = str(exc)
                else:
                    self.process = process  # type: ignore[assignment]  # a Popen look-alike
                    self.pid = self.pgid = process.pid  # it called setsid() before we knew
                    self.cwd = kwargs.get("cwd") or os.getcwd()
                    return self.connection_info
            self.fork_fallback = reason
            log.debug("kernel spawned, not forked: %s", reason)
            return await super().launch_kernel(cmd, **kwargs)

    return ForkProvisioner


@functools.cache
def kernel_manager_class() -> type:
    """An ``AsyncKernelManager`` subclass that forks its kernel from ``km.fork_server``.

    Set ``fork_server`` on an instance (nbclient's ``kernel_manager_class`` creates it);
    with None, or a kernel spec naming its own provisioner, it behaves like its base class.
    """
    import uuid

    from jupyter_client import AsyncKernelManager

    provisioner_class = _provisioner_class()

    class ForkKernelManager(AsyncKernelManager):  # type: ignore[misc]
        fork_server: ForkServer | None = None

        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            spec = self.kernel_spec
            spec_provisioner = spec.metadata.get("kernel_provisioner") if spec else None
            if self.provisioner is None and self.fork_server is not None:
                if spec_provisioner:
                    log.debug("kernel spawned, not forked: its kernel spec names a provisioner")
                else:
                    self.kernel_id = (
                        self.kernel_id or kw.pop("kernel_id", None) or str(uuid.uuid4())
                    )
                    provisioner = provisioner_class(
                        kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
                    )
                    provisioner.fork_server = self.fork_server
                    self.provisioner = provisioner
            return await super()._async_pre_start_kernel(**kw)

    return ForkKernelManager


if __name__ == "__main__":
    sys.exit(main())
