"""Content-addressed step cache for local runs.

A step's key is the hash of everything that decides what it computes: the code of its step
notebook (its own cells, replayed definitions and parameters — not how it is executed, so
pre-imports added for pre-warming are left out), the digests of its inputs, the parameter
values it is given, the content of the data files its cells read by literal path, the
kernel and the runtime version. An entry holds the step's saved outputs (hard links to the
run's files when possible, so caching costs no disk), its executed notebook and its
metrics; entries are published with an atomic rename, so concurrent runs never see half an
entry.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The first line of the block pre-warming appends to a definitions cell.
from jupyter_pipeline.runners.prewarm import _MARK as PREIMPORT_MARK
from jupyter_pipeline.runtime.api import SavedValue

__all__ = [
    "CacheEntry",
    "StepCache",
    "default_cache_dir",
    "files_read",
    "runtime_version",
    "step_code",
]

_MANIFEST = "manifest.json"
# Resolves a dotted callee (``("pd", "read_csv")``) to its full name, or None.
Resolver = Callable[[tuple[str, ...]], str | None]


def runtime_version() -> str:
    """Version string of the step runtime; part of every key, so an upgrade invalidates."""
    from jupyter_pipeline import __version__
    from jupyter_pipeline.runtime import RUNTIME_VERSION

    return f"{__version__}/{RUNTIME_VERSION}"


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def step_code(step_nb: Mapping[str, Any]) -> list[str]:
    """The code of a step notebook: the source of each code cell, in order.

    What decides the result, not how the step is executed: the block pre-warming appends to
    the definitions cell (guarded imports of modules the step's cells import anyway; see
    :mod:`jupyter_pipeline.runners.prewarm`) is cut, and trailing newlines with it, so runs
    with and without pre-warming share cache entries.
    """
    out = []
    for cell in step_nb.get("cells", []):
        if cell.get("cell_type") == "code":
            src = _source(cell)
            cut = src.find("\n" + PREIMPORT_MARK)
            out.append((src if cut < 0 else src[:cut]).rstrip("\n"))
    return out


@functools.lru_cache(maxsize=4096)
def _cell_facts(source: str) -> tuple[tuple[str, Any], ...]:
    """A cell's imports (``("import", (name, origin))``) and calls (``("call", call)``), in
    order. Memoized by source: a plan builds every step's notebook, and the replayed
    definitions (and unchanged cells) recur across steps and across plans of one notebook.
    """
    from jupyter_pipeline.analysis.memo import analyzed_cell
    from jupyter_pipeline.analysis.source import CellSyntaxError

    try:  # (the analysis has usually just scoped this cell: its memo has the events)
        events = analyzed_cell(source)[1].events
    except CellSyntaxError:
        return ()
    facts: list[tuple[str, Any]] = []
    for ev in events:
        info = ev.info
        if ev.op == "bind" and ev.kind == "import" and getattr(info, "origin", None):
            facts.append(("import", (ev.name, info.origin)))
        summary = getattr(info, "summary", None)
        calls = [info] if ev.op == "call" else list(summary.calls) if summary else []
        facts += [("call", call) for call in calls]
    return tuple(facts)


def _calls(sources: Iterable[str]) -> Iterable[tuple[Any, str | None, Resolver]]:
    """Every call in ``sources`` (function bodies included), with its resolved dotted name
    and the resolver of dotted names at that point (as the analysis' ``full_name``: through
    the imports so far, or a kernel builtin such as ``open``).
    """
    from jupyter_pipeline.analysis.knowledge import KERNEL_NAMES

    origins: dict[str, str] = {}  # name bound by an import → what it imports

    def resolve(path: tuple[str, ...]) -> str | None:
        if not path:
            return None
        if path[0] in origins:
            return ".".join((origins[path[0]], *path[1:]))
        return path[0] if len(path) == 1 and path[0] in KERNEL_NAMES else None

    for source in sources:
        for kind, fact in _cell_facts(source):
            if kind == "import":
                origins[fact[0]] = fact[1]
                continue
            yield fact, resolve(fact.path), resolve


# (path, size, mtime_ns, inode) → content digest: a big data file is hashed once per
# process while it stays untouched (a server runs a notebook many times).
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_dir():  # e.g. a partitioned parquet data set: every file, by relative path
        for child in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(str(child.relative_to(path)).encode() + b"\0")
            h.update(_digest(child).encode())
        return "dir:" + h.hexdigest()
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    if memo in _DIGESTS:
        return _DIGESTS[memo]
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    # A file changed within the clock's granularity of its last write could keep its
    # mtime: remember only files untouched for a while (git's "racily clean" rule).
    if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
        _DIGESTS[memo] = digest
    return digest


def files_read(step_nb: Mapping[str, Any], folder: str | Path) -> dict[str, str]:
    """Content digests of the existing files a step's code reads by literal path.

    A step that reads ``data/train.csv`` computes something else once the file changes, so
    the file's content is part of its cache key. Paths are found by the analysis' own rule
    for its file diagnostics (:func:`~jupyter_pipeline.analysis.files.literal_file_access`:
    ``open("x")``, ``pd.read_csv("x")``, ``np.load("x")``, ``Path("x").read_text()``…) in the
    step notebook's code (its cells and replayed definitions); a path the step wrote before
    reading it is its own output, not an input. Missing files are left out (a step that
    creates them will do so again).

    Args:
        step_nb: The step notebook.
        folder: Where relative paths resolve: the kernel's working directory (the notebook's
            folder).

    Returns:
        Path as written → ``sha256`` of the content (a folder: of its files).
    """
    from jupyter_pipeline.analysis.files import literal_file_access

    written: set[str] = set()
    out: dict[str, str] = {}
    sources = [_source(c) for c in step_nb.get("cells", []) if c.get("cell_type") == "code"]
    for call, full, resolve in _calls(sources):
        found = literal_file_access(call, full, resolve)
        if found is None:
            continue
        path, writes = found
        norm = os.path.normpath(path)
        if writes:
            written.add(norm)
            continue
        if norm in written or path in out:
            continue
        target = Path(folder) / os.path.expanduser(path)  # an absolute path stays absolute
        try:
            out[path] = _digest(target)
        except OSError:
            continue  # missing or unreadable: the step fails or creates it, as in the notebook
    return out


def default_cache_dir(store_folder: str | Path) -> Path:
    """The step-cache folder of local runs given none: ``cache/`` beside the store's database.

    ``store_folder`` is :attr:`jupyter_pipeline.store.RunStore.folder`. ``runs --prune``
    removes the entries of pruned runs from this folder, so both must agree on it.
    """
    return Path(store_folder) / "cache"


@dataclass
class CacheEntry:
    """A cache hit: where the outputs are and what the step reported."""

    key: str
    path: Path
    outputs: list[SavedValue]
    metrics: dict[str, Any]
    executed_notebook: Path | None
    log: Path | None


class StepCache:
    """A folder of cache entries, ``<dir>/<key[:2]>/<key>/``.

    Args:
        directory: Root folder (created on first write).
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def key(
        *,
        code: list[str],
        inputs: Mapping[str, str],
        parameters: Mapping[str, Any],
        outputs: list[str],
        kernel_name: str,
        env: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> str:
        """Hash the things that decide a step's results.

        Args:
            code: Code cells of the built step notebook (:func:`step_code`).
            inputs: Input (and ``__state__:``) name → digest of the value loaded.
            parameters: Parameter values injected into the step.
            outputs: Names the step saves.
            kernel_name: Kernel it runs in.
            env: Environment variables the step sets (``env:`` tags).
            files: Data files the step reads → content digest (:func:`files_read`).
        """
        payload = json.dumps(
            StepCache._payload(code, inputs, parameters, outputs, kernel_name, env, files),
            sort_keys=True,
            default=repr,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    @staticmethod
    def _payload(
        code: list[str],
        inputs: Mapping[str, str],
        parameters: Mapping[str, Any],
        outputs: list[str],
        kernel_name: str,
        env: Mapping[str, str] | None,
        files: Mapping[str, str] | None,
    ) -> dict[str, Any]:
        return {
            "runtime": runtime_version(),
            "code": code,
            "inputs": dict(sorted(inputs.items())),
            "parameters": dict(sorted(parameters.items())),
            "outputs": sorted(outputs),
            "kernel": kernel_name,
            "env": dict(sorted((env or {}).items())),
            "files": dict(sorted((files or {}).items())),
        }

    @staticmethod
    def key_parts(
        *,
        code: list[str],
        inputs: Mapping[str, str],
        parameters: Mapping[str, Any],
        outputs: list[str],
        kernel_name: str,
        env: Mapping[str, str] | None = None,
        files: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """What went into :meth:`key`, compact: kept in an entry's manifest so a later plan
        can say *why* a step will run again (code, an input, a data file, a parameter…).

        The code is kept as one digest; parameter values as their JSON (or repr).
        """
        payload = StepCache._payload(code, inputs, parameters, outputs, kernel_name, env, files)
        payload["code"] = hashlib.sha256(json.dumps(code).encode()).hexdigest()
        payload["parameters"] = {
            k: json.dumps(v, sort_keys=True, default=repr) for k, v in payload["parameters"].items()
        }
        return payload

    def parts_of(self, key: str) -> dict[str, Any] | None:
        """The :meth:`key_parts` recorded with the entry ``key``, if it exists and has them."""
        try:
            manifest = json.loads((self._entry_dir(key) / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        parts = manifest.get("parts")
        return parts if isinstance(parts, dict) else None

    def has(self, key: str) -> bool:
        """True if an entry is published under ``key``."""
        return (self._entry_dir(key) / _MANIFEST).exists()

    def _entry_dir(self, key: str) -> Path:
        return self.directory / key[:2] / key

    def remove(self, keys: Iterable[str]) -> int:
        """Delete the entries of ``keys`` (those present); returns how many were deleted.

        For pruning (:meth:`jupyter_pipeline.store.RunStore.prune` names the keys no run
        references any more). Run outputs hard-linked into an entry keep their own links.
        """
        count = 0
        for key in keys:
            d = self._entry_dir(key)
            if not (d / _MANIFEST).exists():
                continue
            # Unpublish first (one rename), so a concurrent lookup sees a miss, not half an entry.
            doomed = d.with_name(f".rm-{key}")
            try:
                os.rename(d, doomed)
            except OSError:
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            with contextlib.suppress(OSError):
                d.parent.rmdir()  # the key[:2] folder, when it was its last entry
            count += 1
        return count

    def lookup(self, key: str, outputs: list[str]) -> CacheEntry | None:
        """The entry for ``key`` if present and holding every name in ``outputs``."""
        d = self._entry_dir(key)
        try:
            manifest = json.loads((d / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        saved = []
        for item in manifest.get("outputs", []):
            value = SavedValue.model_validate(item)
            value.path = str(d / "outputs" / value.path)
            if not Path(value.path).exists():
                return None  # someone pruned files by hand; treat as a miss
            saved.append(value)
        if not set(outputs) <= {v.name for v in saved}:
            return None
        nb = d / "executed.ipynb"
        log = d / "log.txt"
        return CacheEntry(
            key=key,
            path=d,
            outputs=saved,
            metrics=manifest.get("metrics", {}),
            executed_notebook=nb if nb.exists() else None,
            log=log if log.exists() else None,
        )

    def put(
        self,
        key: str,
        *,
        output_dir: str | Path,
        outputs: list[SavedValue],
        metrics: Mapping[str, Any],
        executed_notebook: str | Path | None,
        log: str | Path | None = None,
        parts: Mapping[str, Any] | None = None,
    ) -> CacheEntry | None:
        """Publish a step's results under ``key``; returns the entry (None if it failed).

        Files are hard-linked from ``output_dir`` when the file system allows it, else copied.
        A failure to write the cache never fails the run. ``parts`` (:meth:`key_parts`) is
        kept in the manifest for plans (:mod:`jupyter_pipeline.runners.plan`).
        """
        final = self._entry_dir(key)
        if final.exists():
            return self.lookup(key, [v.name for v in outputs])
        output_dir = Path(output_dir)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
            manifest_outputs = []
            for value in outputs:
                src = Path(value.path)
                try:
                    rel = src.relative_to(output_dir)
                except ValueError:
                    rel = Path(value.name)
                dst = tmp / "outputs" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                if src.is_dir():
                    shutil.copytree(src, dst, copy_function=_link_or_copy, dirs_exist_ok=True)
                else:
                    _link_or_copy(src, dst)
                manifest_outputs.append({**value.model_dump(), "path": str(rel)})
            if executed_notebook and Path(executed_notebook).exists():
                shutil.copy2(executed_notebook, tmp / "executed.ipynb")
            if log and Path(log).exists():
                shutil.copy2(log, tmp / "log.txt")
            (tmp / _MANIFEST).write_text(
                json.dumps(
                    {
                        "outputs": manifest_outputs,
                        "metrics": dict(metrics),
                        "parts": dict(parts) if parts is not None else None,
                    },
                    default=repr,
                )
            )
            try:
                os.rename(tmp, final)
            except OSError:  # another run published the same key first; theirs is as good
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            return None
        return self.lookup(key, [v.name for v in outputs])


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
