"""What the REST API does, without HTTP: the handlers parse, call one method here (in a
worker thread) and write its answer. Every refusal is an :class:`ApiError` carrying the
status, a stable code and a one-line message; anything else escaping is a bug (500).

No tornado or jupyter_server import: this is testable and reusable as plain Python.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from jupyter_pipeline import __version__
from jupyter_pipeline.model import Pipeline, Run, RunState
from jupyter_pipeline.notebook import NotebookError, read_notebook
from jupyter_pipeline.runners.base import ParameterError
from jupyter_pipeline.runners.launch import (
    MERGED,
    NOTEBOOK_COPY,
    SETTINGS,
    LaunchError,
    notebook_from_json,
    refuse_errors,
)
from jupyter_pipeline.runners.plan import plan_run
from jupyter_pipeline.server.models import (
    AnalyzeRequest,
    AnalyzeResponse,
    CompileRequest,
    Info,
    LogChunk,
    OutputInfo,
    RunCreated,
    RunInfo,
    RunList,
    RunRequest,
    StepInfo,
)
from jupyter_pipeline.store import RunStore

__all__ = ["ApiError", "PipelineService"]

_LOG_CHUNK = 1 << 20  # at most this many bytes of log per answer


class ApiError(Exception):
    """A refusal the client can act on: HTTP status, stable code, one-line message."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


_KFP_ASK_EVERY = 5.0  # seconds between two looks at one unwatched KFP run from the API


def _not_found(what: str) -> ApiError:
    return ApiError(404, "not-found", what)


def domain_error(exc: BaseException) -> ApiError | None:
    """The API answer for an error of the core that is bad input, not a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, LaunchError):
        return ApiError(400, "invalid-notebook", exc.message, exc.details)
    if isinstance(exc, NotebookError):
        return ApiError(400, "invalid-notebook", str(exc), {"cell": exc.cell})
    if isinstance(exc, ParameterError):
        return ApiError(400, "invalid-parameters", str(exc))
    return None


class PipelineService:
    """The API's operations over one run store and the configured launchers.

    Args:
        store: The run store (shared with the CLI).
        root_dir: The server's root: notebook paths are relative to it and never leave it.
        launchers: Target name → launcher (``start``/``cancel``), built once at start-up.
        default_target: Target of a run request that names none.
        kfp_host: The configured KFP host (reported by ``info``).
        max_parallel: Steps at once per local run (for the plan's sake only).
    """

    def __init__(
        self,
        store: RunStore,
        root_dir: str | Path,
        launchers: dict[str, Any],
        *,
        default_target: str = "local",
        kfp_host: str | None = None,
    ):
        self.store = store
        self.root = Path(os.path.realpath(root_dir))
        self.launchers = launchers
        self.default_target = default_target
        self.kfp_host = kfp_host
        self._output_meta: dict[str, OutputInfo] = {}
        # KFP runs nobody watches: when each was last asked about, and why a state is unknown.
        self._kfp_asked: dict[str, float] = {}
        self._kfp_unknown: dict[str, str] = {}
        # (content digest, path, split) → Pipeline: the sidebar asks again for the same
        # content (focus, re-open, run after analyze); an edit is a new key.
        self._analyses: OrderedDict[tuple[str, str, str], Pipeline] = OrderedDict()
        self._analyses_lock = threading.Lock()

    def pipeline(self, nb: NotebookNode, path: str, split: str) -> Pipeline:
        """``nb`` analyzed (memoized by content: the analysis is a pure function of it)."""
        from jupyter_pipeline.analysis import analyze

        digest = hashlib.sha256(json.dumps(nb, sort_keys=True).encode()).hexdigest()
        key = (digest, path, split)
        with self._analyses_lock:
            if key in self._analyses:
                self._analyses.move_to_end(key)
                return self._analyses[key]
        pipeline = analyze(nb, path=path, split=split)  # type: ignore[arg-type]
        with self._analyses_lock:
            self._analyses[key] = pipeline
            while len(self._analyses) > 64:
                self._analyses.popitem(last=False)
        return pipeline

    # ------------------------------------------------------------------ paths

    def resolve(self, rel: str, *, must_exist: bool = True) -> Path:
        """The real path of ``rel`` (relative to the root); 404 if it is outside the root.

        Absolute paths, ``..`` and symlinks that lead out of the root are all "not found":
        the answer must not reveal what exists outside.
        """
        if not rel or os.path.isabs(rel) or rel.startswith("~") or "\0" in rel:
            raise _not_found(f"no notebook {rel!r} under the server root")
        real = Path(os.path.realpath(self.root / rel))
        if real != self.root and self.root not in real.parents:
            raise _not_found(f"no notebook {rel!r} under the server root")
        if must_exist and not real.is_file():
            raise _not_found(f"no notebook {rel!r} under the server root")
        if not must_exist and not real.parent.is_dir():
            raise _not_found(f"no folder for {rel!r} under the server root")
        return real

    def relative(self, path: str | Path) -> str | None:
        """``path`` relative to the root (``/``-separated), or None if outside it."""
        real = Path(os.path.realpath(path))
        if real == self.root or self.root not in real.parents:
            return None
        return real.relative_to(self.root).as_posix()

    def notebook(
        self, req: AnalyzeRequest | CompileRequest | RunRequest
    ) -> tuple[NotebookNode, Path]:
        """The request's notebook and its path (a file under the root, or unsaved JSON)."""
        if req.notebook is not None:
            path = (
                self.resolve(req.path, must_exist=False)
                if req.path
                else self.root / "untitled.ipynb"
            )
            return notebook_from_json(req.notebook, req.path or "<notebook>"), path
        assert req.path is not None  # the model requires one of them
        path = self.resolve(req.path)
        return read_notebook(path), path

    # ------------------------------------------------------------------ endpoints

    def info(self) -> Info:
        """``GET info``."""
        from jupyter_pipeline.runners.cache import runtime_version

        try:
            from importlib.metadata import version

            kfp_version: str | None = version("kfp")
        except Exception:  # not installed
            kfp_version = None
        targets = ["local"] + (["kfp"] if "kfp" in self.launchers and kfp_version else [])
        return Info(
            version=__version__,
            engine_version=runtime_version(),
            kfp_version=kfp_version,
            targets=targets,  # type: ignore[arg-type]
            kfp_host=self.kfp_host,
            default_target=self.default_target if self.default_target in targets else "local",  # type: ignore[arg-type]
        )

    def analyze(self, req: AnalyzeRequest) -> AnalyzeResponse:
        """``POST analyze``: the pipeline and the plan. Error diagnostics are still a 200."""
        nb, path = self.notebook(req)
        pipeline = self.pipeline(nb, req.path or "<notebook>", req.split)
        plan = []
        if not pipeline.errors:
            plan = plan_run(pipeline, nb, path, self.store, parameters=req.parameters)
        return AnalyzeResponse(pipeline=pipeline, plan=plan)

    def compile(self, req: CompileRequest) -> tuple[str, bytes]:
        """``POST compile``: (file name, KFP YAML bytes)."""
        try:
            from jupyter_pipeline.compile import CompileError, ConfigError, load_config, write_yaml
        except ImportError as exc:  # kfp is an optional dependency
            raise ApiError(
                400,
                "kfp-missing",
                f"compiling needs kfp ({exc}); pip install 'jupyter-pipeline[kfp]'",
            ) from None
        nb, path = self.notebook(req)
        shown = req.path or str(path)
        pipeline = refuse_errors(self.pipeline(nb, shown, req.split), shown)
        try:
            config = load_config(nb.metadata)
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / f"{pipeline.name}.yaml"
                write_yaml(pipeline, nb, out, config=config, image=req.image)
                return out.name, out.read_bytes()
        except (CompileError, ConfigError) as exc:
            raise ApiError(400, "compile-error", f"{req.path or 'notebook'}: {exc}") from None

    def start_run(self, req: RunRequest) -> RunCreated:
        """``POST runs``: record the run and start its detached runner."""
        from jupyter_pipeline.runners.launch import reap_children

        reap_children()  # collect runner processes of this server that have ended
        target = req.target or self.default_target
        parameters = dict(req.parameters)
        if req.rerun:
            nb, path, earlier = self._recorded(req.rerun)
            parameters = {**earlier.parameters, **parameters}
            target = req.target or earlier.backend
            shown = self.relative(path) or str(path)
        else:
            nb, path = self.notebook(req)
            shown = req.path or str(path)
        launcher = self.launchers.get(target)
        if launcher is None:
            raise ApiError(
                400,
                "unknown-target",
                f"target {target!r} is not configured here; targets: {', '.join(self.launchers)}",
            )
        pipeline = refuse_errors(self.pipeline(nb, shown, req.split), shown)
        run = launcher.start(
            pipeline, nb, path, parameters, cache=req.cache, max_parallel=req.max_parallel
        )
        return RunCreated(id=run.id, state=run.state)

    def _recorded(self, run_id: str) -> tuple[NotebookNode, Path, Run]:
        """The notebook copy an earlier run recorded, its path, and the run."""
        run = self._run(run_id)
        copy = Path(run.run_dir) / NOTEBOOK_COPY if run.run_dir else None
        if copy is None or not copy.exists():
            raise _not_found(
                f"run {run.id} has no recorded notebook copy (runs started from the CLI keep "
                "none); run the notebook itself"
            )
        if self.relative(run.notebook) is None:
            raise _not_found(f"run {run.id}'s notebook is not under the server root")
        return read_notebook(copy), Path(run.notebook), run

    def _run(self, run_id: str) -> Run:
        try:
            return self.store.get_run(run_id)
        except KeyError:
            raise _not_found(f"no run {run_id!r}") from None

    def run_info(self, run: Run) -> RunInfo:
        """A run as the API shows it."""
        steps = []
        for s in run.steps:
            steps.append(
                StepInfo(
                    name=s.step,
                    state=s.state,
                    started=s.started,
                    finished=s.finished,
                    attempts=s.attempts,
                    cached=s.state is RunState.cached,
                    error=s.error,
                    error_cell=s.error_cell,
                    outputs={name: self._output(loc) for name, loc in s.outputs.items()},
                    has_log=bool(s.log_path and os.path.exists(s.log_path)),
                    has_notebook=bool(s.executed_notebook and os.path.exists(s.executed_notebook)),
                )
            )
        merged = bool(run.run_dir and (Path(run.run_dir) / MERGED).exists())
        return RunInfo(
            id=run.id,
            pipeline=run.pipeline,
            notebook=run.notebook,
            path=self.relative(run.notebook),
            state=run.state,
            backend=run.backend,
            parameters=run.parameters,
            created=run.created,
            started=run.started,
            finished=run.finished,
            url=run.url,
            # Not watched and its KFP host unreachable: the recorded state may be stale.
            error=(None if run.state.finished else self._kfp_unknown.get(run.id)) or run.error,
            steps=steps,
            has_merged_notebook=merged,
        )

    def _output(self, location: str) -> OutputInfo:
        known = self._output_meta.get(location)
        if known is not None:
            return known
        info = OutputInfo(type=None, size=None)
        try:
            meta = json.loads((Path(location) / "meta.json").read_text())
            info = OutputInfo(type=meta.get("type"), size=meta.get("size"))
            if len(self._output_meta) > 10_000:
                self._output_meta.clear()
            self._output_meta[location] = info  # saved values never change
        except (OSError, ValueError, TypeError):
            pass  # a KFP artifact URI, or files pruned: type and size unknown
        return info

    def get_run(self, run_id: str) -> RunInfo:
        """``GET runs/{id}``."""
        return self.run_info(self._refresh_unwatched([self._run(run_id)])[0])

    def _refresh_unwatched(self, runs: list[Run]) -> list[Run]:
        """Ask KFP about its unfinished runs nobody watches (at most every few seconds each).

        Otherwise a run submitted from the CLI without ``--watch`` (or whose watcher died)
        reads running forever. A run whose host cannot be reached keeps its recorded state,
        with the reason in its ``error`` (:meth:`run_info`).
        """
        now = time.monotonic()
        due = [
            r
            for r in runs
            if r.backend == "kfp"
            and not r.state.finished
            and now - self._kfp_asked.get(r.id, -_KFP_ASK_EVERY) >= _KFP_ASK_EVERY
        ]
        if not due:
            return runs
        from jupyter_pipeline.runners.kfp import refresh_unwatched

        for r in due:
            self._kfp_asked[r.id] = now
            self._kfp_unknown.pop(r.id, None)
        self._kfp_unknown.update(refresh_unwatched(self.store, due))
        fresh = {r.id: self.store.get_run(r.id) for r in due}
        return [fresh.get(r.id, r) for r in runs]

    def list_runs(
        self, *, notebook: str | None, limit: int, before: float | None, cursor: int
    ) -> RunList:
        """``GET runs?notebook=&limit=&before=``: newest first."""
        if limit < 1 or limit > 500:
            raise ApiError(400, "bad-request", "limit must be between 1 and 500")
        path = str(self.resolve(notebook, must_exist=False)) if notebook else None
        runs = self.store.list_runs(limit=limit + 1, notebook=path, before=before)
        more = len(runs) > limit
        runs = self._refresh_unwatched(runs[:limit])
        return RunList(
            runs=[self.run_info(r) for r in runs],
            cursor=cursor,
            next_before=runs[-1].created if more and runs else None,
        )

    def cancel(self, run_id: str) -> Run:
        """``DELETE runs/{id}``: ask the run's backend to stop it; 409 if it has finished."""
        run = self._run(run_id)
        if run.state.finished:
            raise ApiError(409, "conflict", f"run {run.id} already {run.state.value}")
        launcher = self.launchers.get(run.backend)
        if launcher is None:
            raise ApiError(
                409,
                "conflict",
                f"run {run.id} is a {run.backend} run; that target is not configured here",
            )
        launcher.cancel(run.id)
        return self.store.get_run(run.id)

    def wait_finished(self, run_id: str, timeout: float) -> Run:
        """Poll the store until the run has finished or ``timeout`` passed (worker thread)."""
        deadline = time.monotonic() + timeout
        run = self._run(run_id)
        while not run.state.finished and time.monotonic() < deadline:
            time.sleep(0.1)
            run = self._run(run_id)
        return run

    def _step(self, run_id: str, step: str) -> tuple[Run, Any]:
        run = self._run(run_id)
        for s in run.steps:
            if s.step == step:
                return run, s
        raise _not_found(f"run {run.id} has no step {step!r}")

    def log(self, run_id: str, step: str, offset: int) -> LogChunk:
        """``GET runs/{id}/steps/{step}/log?offset=N``."""
        if offset < 0:
            raise ApiError(400, "bad-request", "offset must not be negative")
        _run, s = self._step(run_id, step)
        finished = s.state.finished
        if not s.log_path or not os.path.exists(s.log_path):
            if finished:
                raise _not_found(f"step {step} of run {run_id} has no log")
            return LogChunk(text="", offset=offset, next_offset=offset, size=0, finished=finished)
        with open(s.log_path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            start = min(offset, size)
            f.seek(start)
            data = f.read(_LOG_CHUNK)
        data = data[: _whole_chars(data)]
        return LogChunk(
            text=data.decode("utf-8", errors="replace"),
            offset=start,
            next_offset=start + len(data),
            size=size,
            finished=finished and start + len(data) >= size,
        )

    def step_notebook(self, run_id: str, step: str) -> dict[str, Any]:
        """``GET runs/{id}/steps/{step}/notebook``: the executed step notebook."""
        _run, s = self._step(run_id, step)
        if not s.executed_notebook or not os.path.exists(s.executed_notebook):
            raise _not_found(f"step {step} of run {run_id} has no executed notebook (yet)")
        return json.loads(Path(s.executed_notebook).read_text(encoding="utf-8"))

    def merged_notebook(self, run_id: str) -> dict[str, Any]:
        """``GET runs/{id}/notebook``: the merged executed notebook.

        Written by the runner when the run ends; while it runs, merged on the fly from the
        notebook copy and the step notebooks executed so far.
        """
        run = self._run(run_id)
        run_dir = Path(run.run_dir) if run.run_dir else None
        if run_dir is not None and (run_dir / MERGED).exists():
            return json.loads((run_dir / MERGED).read_text(encoding="utf-8"))
        if run_dir is None or not (run_dir / NOTEBOOK_COPY).exists():
            raise _not_found(f"run {run.id} has no merged notebook")
        from jupyter_pipeline.runtime import merge_outputs

        source = read_notebook(run_dir / NOTEBOOK_COPY)
        executed = {}
        for s in run.steps:
            if s.executed_notebook and os.path.exists(s.executed_notebook):
                try:
                    executed[s.step] = nbformat.read(s.executed_notebook, as_version=4)
                except Exception:  # being written by papermill right now: leave it out
                    continue
        # The overrides as the runner will record them, so the notebook looks the same
        # (injected-parameters cell included) before and after the run ends.
        overrides = None
        with contextlib.suppress(OSError, ValueError):
            overrides = json.loads((run_dir / SETTINGS).read_text()).get("overrides")
        merged = merge_outputs(source, executed, parameters=overrides)
        return json.loads(nbformat.writes(merged))


def _whole_chars(data: bytes) -> int:
    """Length of ``data`` without a UTF-8 sequence cut at its end (the next read has it)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if byte & 0x80 == 0:  # ASCII
            return len(data)
        need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
        return len(data) if back >= need else len(data) - back
    return len(data)
