"""Content-addressed step cache for local runs.

A step's key is the hash of everything that decides what it computes: the code of its step
notebook, the digests of its inputs, the parameter values it is given, the kernel and the
runtime version. An entry holds the step's saved outputs (hard links to the run's files when
possible, so caching costs no disk), its executed notebook and its metrics; entries are
published with an atomic rename, so concurrent runs never see half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_pipeline.runtime.api import SavedValue

__all__ = ["CacheEntry", "StepCache", "runtime_version", "step_code"]

_MANIFEST = "manifest.json"


def runtime_version() -> str:
    """Version string of the step runtime; part of every key, so an upgrade invalidates."""
    from jupyter_pipeline import __version__

    try:
        from jupyter_pipeline import runtime

        extra = getattr(runtime, "RUNTIME_VERSION", None) or getattr(runtime, "__version__", None)
    except Exception:  # the runtime package may be mid-import in odd setups; version suffices
        extra = None
    return f"{__version__}/{extra}" if extra else __version__


def step_code(step_nb: Mapping[str, Any]) -> list[str]:
    """The code of a step notebook: the source of each code cell, in order."""
    out = []
    for cell in step_nb.get("cells", []):
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            out.append("".join(src) if isinstance(src, list) else str(src))
    return out


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
    ) -> str:
        """Hash the things that decide a step's results.

        Args:
            code: Code cells of the built step notebook (:func:`step_code`).
            inputs: Input (and ``__state__:``) name → digest of the value loaded.
            parameters: Parameter values injected into the step.
            outputs: Names the step saves.
            kernel_name: Kernel it runs in.
            env: Environment variables the step sets (``env:`` tags).
        """
        payload = json.dumps(
            {
                "runtime": runtime_version(),
                "code": code,
                "inputs": dict(sorted(inputs.items())),
                "parameters": dict(sorted(parameters.items())),
                "outputs": sorted(outputs),
                "kernel": kernel_name,
                "env": dict(sorted((env or {}).items())),
            },
            sort_keys=True,
            default=repr,
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def _entry_dir(self, key: str) -> Path:
        return self.directory / key[:2] / key

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
    ) -> CacheEntry | None:
        """Publish a step's results under ``key``; returns the entry (None if it failed).

        Files are hard-linked from ``output_dir`` when the file system allows it, else copied.
        A failure to write the cache never fails the run.
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
                json.dumps({"outputs": manifest_outputs, "metrics": dict(metrics)}, default=repr)
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
