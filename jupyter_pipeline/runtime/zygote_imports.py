"""What the fork server's zygote may pre-import, and how it checks that an import is harmless.

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

:class:`_Preloader` is that vetting, the half of the zygote (:mod:`.zygote`) that runs
before any kernel is forked; the serving half builds on it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

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


class _Preloader:
    """The zygote's pre-imports: the kernel's own modules, then the steps' libraries."""

    def __init__(self) -> None:
        self.base_path = list(sys.path)  # what `python -m` gave this process: a kernel's too
        self.cwd = os.getcwd()
        self.pending: list[str] = []
        self.loaded: list[str] = []
        self.skipped: dict[str, str] = {}
        self.dirty: tuple[str, str] | None = None  # (module, why): retired
        self.asked_shell: list[str] | None = None  # who called get_ipython, while pre-importing
        self.argv_read: list[bool] = []  # sys.argv was looked at while pre-importing
        self.replays: dict[str, Any] = {}  # import-time shell questions to ask again in a kernel

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
