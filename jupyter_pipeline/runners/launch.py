"""Start a run in its own detached runner process and return its id at once.

A run started from the Jupyter server (or any long-lived process) must outlive it: it runs
in a runner process of its own session (``start_new_session``), exactly as
``jupyter-pipeline run`` runs it — :class:`~jupyter_pipeline.runners.local.LocalRunner`
in the main thread of a fresh interpreter, SIGTERM turned into a clean cancel. The caller
learns every state from the shared run store, like ``jupyter-pipeline runs`` does.

The launcher records the run (queued) before the runner process starts, so its id is
known at once and the run is listed straight away; it also writes, in the run's folder:

* ``notebook.ipynb`` — the notebook as it was run (from the file or from in-memory JSON,
  e.g. the editor's unsaved content), so "re-run" and "open merged notebook" still work
  after the user edits the notebook;
* ``launch.json`` — the runner's settings;
* ``runner.log`` — the runner process's stdout and stderr;
* ``merged.ipynb`` — the merged executed notebook, when the run ends.

KFP runs are submitted in the calling process (the cluster answers, or refuses, at once)
and then followed by a detached watcher process that records their progress in the store.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbformat import NotebookNode

from jupyter_pipeline.model import Pipeline, Run, RunState
from jupyter_pipeline.notebook import SplitMode, read_notebook
from jupyter_pipeline.notebook.validation import validate_notebook
from jupyter_pipeline.runners.base import ParameterError, resolve_parameters
from jupyter_pipeline.store import RunStore, process_started

__all__ = [
    "KfpLauncher",
    "LaunchError",
    "LocalLauncher",
    "analyze_for_run",
    "launch",
    "notebook_from_json",
    "reap_children",
    "refuse_errors",
]

NOTEBOOK_COPY = "notebook.ipynb"
MERGED = "merged.ipynb"
RUNNER_LOG = "runner.log"
SETTINGS = "launch.json"

# Runner processes this process started: polled by reap_children() so a finished runner
# does not linger as a zombie while the (long-lived) parent runs.
_children: list[subprocess.Popen[bytes]] = []
_children_lock = threading.Lock()


class LaunchError(ValueError):
    """The run cannot start: bad input the user can fix.

    Attributes:
        message: One line naming the notebook (and cell) and what to do.
        details: Structured detail for API clients (e.g. the error diagnostics).
    """

    def __init__(self, message: str, details: Any = None):
        super().__init__(message)
        self.message = message
        self.details = details


def notebook_from_json(data: Mapping[str, Any] | str, where: str = "<notebook>") -> NotebookNode:
    """Turn nbformat JSON (a dict or a string) into a validated v4 notebook.

    Raises:
        LaunchError: It is not a notebook nbformat can read.
    """
    try:
        if isinstance(data, Mapping) and data.get("nbformat") == 4:
            # Already v4 (what JupyterLab sends): validate it as is instead of a JSON round
            # trip through nbformat.reads (half the cost for a big notebook).
            nb = nbformat.from_dict(data)
        else:
            text = data if isinstance(data, str) else json.dumps(data)
            nb = nbformat.reads(text, as_version=4)
        validate_notebook(nb)  # nbformat.validate, re-checking only cells not seen before
    except Exception as exc:  # nbformat raises several unrelated types for bad input
        first = str(exc).strip().splitlines()
        raise LaunchError(
            f"{where}: not a valid notebook ({first[0] if first else type(exc).__name__}); "
            "send the notebook's nbformat 4 JSON"
        ) from None
    return nb


def analyze_for_run(nb: NotebookNode, path: str, split: SplitMode = "tags") -> Pipeline:
    """Analyze ``nb`` and refuse (with the diagnostics) if it has errors.

    Raises:
        LaunchError: Error diagnostics (``details`` = the diagnostics as JSON), or bad tags.
        NotebookError: Tags or syntax that cannot be analyzed at all.
    """
    from jupyter_pipeline.analysis import analyze

    return refuse_errors(analyze(nb, path=path, split=split), path)


def refuse_errors(pipeline: Pipeline, path: str) -> Pipeline:
    """``pipeline`` if it has no error diagnostics.

    Raises:
        LaunchError: It has some (``details`` = all the diagnostics as JSON).
    """
    errors = pipeline.errors
    if errors:
        first = errors[0]
        where = f"cell {first.cell}: " if first.cell is not None else ""
        raise LaunchError(
            f"{path}: {len(errors)} error(s), first {where}{first.message}; fix them before "
            "running",
            details={"diagnostics": [d.model_dump(mode="json") for d in pipeline.diagnostics]},
        )
    return pipeline


def check_kernel(pipeline: Pipeline, path: str) -> None:
    """Refuse a notebook whose kernel is not installed here (the run could not start)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    if pipeline.kernel_name not in specs:
        raise LaunchError(
            f"{path}: its kernel {pipeline.kernel_name!r} is not installed here (installed: "
            f"{', '.join(sorted(specs)) or 'none'}); install it or change the notebook's kernel"
        )


def _values(pipeline: Pipeline, parameters: Mapping[str, Any] | None, path: str) -> dict[str, Any]:
    try:
        return resolve_parameters(pipeline, parameters)
    except ParameterError as exc:
        raise LaunchError(f"{path}: {exc}") from None


def _spawn(args: list[str], run_dir: Path, cwd: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``python -m jupyter_pipeline.runners.launch ARGS`` detached; return its pid."""
    log = open(run_dir / RUNNER_LOG, "ab")  # noqa: SIM115 - the child keeps it open
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter_pipeline.runners.launch", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            # Its own session: a server's Ctrl-C, SIGHUP or process-group kill does not reach
            # the run, which keeps going after the server is gone.
            start_new_session=True,
            close_fds=True,
            env={**os.environ, **(env or {})},
        )
    finally:
        log.close()
    with _children_lock:
        _children.append(proc)
    return proc.pid


def reap_children() -> int:
    """Collect runner processes of this process that have exited; returns how many run on."""
    with _children_lock:
        _children[:] = [p for p in _children if p.poll() is None]
        return len(_children)


def _record_copy(store: RunStore, run: Run, nb: NotebookNode, settings: dict[str, Any]) -> Path:
    run_dir = store.new_run_dir(run.id)
    nbformat.write(nb, str(run_dir / NOTEBOOK_COPY))
    (run_dir / SETTINGS).write_text(json.dumps(settings, indent=1))
    store.update_run(run.id, run_dir=str(run_dir))
    return run_dir


class LocalLauncher:
    """Starts local runs, each in a detached runner process (see the module docstring).

    Args:
        store: The run store the runs are recorded in.
        max_parallel: Steps executing at once per run (default: CPU count).
        cache: Reuse results of unchanged steps.
        prewarm: Start kernels of upcoming steps early.
        fork: Fork kernels from a fork server where that is faithful.
        html: Also export each executed step notebook to HTML.
    """

    target = "local"

    def __init__(
        self,
        store: RunStore,
        *,
        max_parallel: int | None = None,
        cache: bool = True,
        prewarm: bool = True,
        fork: bool = True,
        html: bool = False,
    ):
        self.store = store
        self.settings: dict[str, Any] = {
            "max_parallel": max_parallel,
            "cache": cache,
            "prewarm": prewarm,
            "fork": fork,
            "html": html,
        }

    def start(
        self,
        pipeline: Pipeline,
        nb: NotebookNode,
        path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        *,
        cache: bool | None = None,
        max_parallel: int | None = None,
    ) -> Run:
        """Record the run (queued), copy the notebook, start its runner; return the run.

        Args:
            pipeline: ``nb`` analyzed (without errors; see :func:`analyze_for_run`).
            nb: The notebook to run (it is copied into the run folder).
            path: The notebook's path: the run's ``notebook``; kernels run in its folder.
            parameters: Parameter overrides.
            cache: This run only: reuse unchanged steps' results (default: the launcher's).
            max_parallel: This run only: steps at once (default: the launcher's).

        Raises:
            LaunchError: Bad parameters, or the notebook's kernel is not installed.
        """
        path = Path(path).absolute()
        values = _values(pipeline, parameters, str(path))
        check_kernel(pipeline, str(path))
        run = self.store.create_run(pipeline, notebook=path, backend="local", parameters=values)
        settings = dict(self.settings)
        if cache is not None:
            settings["cache"] = cache
        if max_parallel is not None:
            settings["max_parallel"] = max_parallel
        # Only what the caller overrode is injected (papermill's injected-parameters cell);
        # the store keeps every value the run used.
        settings["overrides"] = {k: values[k] for k in parameters or {}}
        run_dir = _record_copy(self.store, run, nb, settings)
        try:
            pid = _spawn(["run", "--store", str(self.store.path), run.id], run_dir, path.parent)
        except OSError as exc:
            self.store.update_run(
                run.id,
                state=RunState.failed,
                finished=time.time(),
                error=f"could not start the runner: {exc}",
            )
            raise
        # From here on, a runner that dies before finishing is noticed ("runner lost").
        self.store.update_run(run.id, pid=pid, pid_created=process_started(pid))
        return self.store.get_run(run.id)

    def cancel(self, run_id: str) -> bool:
        """Cancel a run on the CLI's path (flag + SIGTERM to its runner); True if it ran."""
        from jupyter_pipeline.runners.local import cancel_run

        return cancel_run(self.store, run_id)


class KfpLauncher:
    """Submits runs to Kubeflow Pipelines and follows them from a detached watcher process.

    Args:
        store: The run store the runs are recorded in.
        host: KFP API endpoint (default: the KFP config / ``KF_PIPELINES_ENDPOINT``).
        namespace: Kubernetes namespace.
        image: Default step image.
        experiment: Default experiment name.
        poll_interval: Seconds between the watcher's polls of the cluster.
    """

    target = "kfp"

    def __init__(
        self,
        store: RunStore,
        *,
        host: str | None = None,
        namespace: str | None = None,
        image: str | None = None,
        experiment: str | None = None,
        poll_interval: float = 5.0,
    ):
        self.store = store
        self.host = host
        self.namespace = namespace
        self.image = image
        self.experiment = experiment
        self.poll_interval = poll_interval

    def _runner(self, nb: NotebookNode | None = None) -> Any:
        from jupyter_pipeline.compile.config import ConfigError, load_config
        from jupyter_pipeline.runners.kfp import KfpRunner

        try:
            config = load_config(nb.metadata if nb is not None else None)
        except ConfigError as exc:
            raise LaunchError(str(exc)) from None
        config = config.merged(
            host=self.host, namespace=self.namespace, image=self.image, experiment=self.experiment
        )
        return KfpRunner(config=config, store=self.store, poll_interval=self.poll_interval)

    def start(
        self,
        pipeline: Pipeline,
        nb: NotebookNode,
        path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        *,
        cache: bool | None = None,
        max_parallel: int | None = None,
    ) -> Run:
        """Compile and submit (in this process), then start the detached watcher.

        ``cache=False`` turns KFP's caching off for this run; ``max_parallel`` is for local
        runs (KFP schedules its own pods) and ignored.

        Raises:
            LaunchError: Bad parameters, the pipeline cannot compile, or the cluster cannot
                be used (unreachable, credentials rejected, incompatible).
        """
        from jupyter_pipeline.compile import CompileError
        from jupyter_pipeline.runners.kfp import KfpError

        path = Path(path).absolute()
        _values(pipeline, parameters, str(path))
        runner = self._runner(nb)
        try:
            run = runner.submit(
                pipeline,
                path,
                parameters,
                source_nb=nb,
                enable_caching=False if cache is False else None,
            )
        except (KfpError, CompileError) as exc:
            raise LaunchError(f"{path}: {exc}") from None
        settings = {"host": runner.host, "poll_interval": self.poll_interval}
        run_dir = _record_copy(self.store, run, nb, settings)
        _spawn(["watch-kfp", "--store", str(self.store.path), run.id], run_dir, path.parent)
        return self.store.get_run(run.id)

    def cancel(self, run_id: str) -> bool:
        """Terminate the run on the cluster; True if it was still going.

        Raises:
            LaunchError: The cluster cannot be reached or refused.
        """
        from jupyter_pipeline.runners.kfp import KfpError

        try:
            return bool(self._runner().cancel(run_id))
        except KfpError as exc:
            raise LaunchError(str(exc)) from None


def launch(
    store: RunStore,
    path: str | Path,
    *,
    notebook: Mapping[str, Any] | NotebookNode | None = None,
    parameters: Mapping[str, Any] | None = None,
    split: SplitMode = "tags",
    launcher: LocalLauncher | KfpLauncher | None = None,
) -> Run:
    """Analyze a notebook and start it in a detached runner; return the queued run at once.

    Args:
        store: The run store.
        path: The notebook's path (read unless ``notebook`` is given; kernels run in its
            folder either way).
        notebook: In-memory nbformat JSON (e.g. unsaved editor content) to run instead of
            the file's content.
        parameters: Parameter overrides.
        split: How to split a notebook without step tags.
        launcher: Who starts it (default: a :class:`LocalLauncher` on ``store``).

    Raises:
        LaunchError: The notebook has error diagnostics, bad parameters, no kernel here.
        NotebookError: The notebook cannot be read or analyzed.
    """
    if notebook is None:
        nb = read_notebook(path)
    elif isinstance(notebook, NotebookNode):
        nb = notebook
    else:
        nb = notebook_from_json(notebook, str(path))
    pipeline = analyze_for_run(nb, str(path), split)
    return (launcher or LocalLauncher(store)).start(pipeline, nb, path, parameters)


# ------------------------------------------------------------------------ the runner process


def _print_event(event: Any) -> None:
    """One line per state change into runner.log (what `jupyter-pipeline run` prints)."""
    if event.kind == "step" and event.step:
        s = next(s for s in event.run.steps if s.step == event.step)
        extra = f": {s.error}" if s.error and s.state.value != "succeeded" else ""
        print(f"{time.strftime('%H:%M:%S')} {s.step}: {s.state.value}{extra}", flush=True)
    elif event.kind == "run":
        print(
            f"{time.strftime('%H:%M:%S')} run {event.run.id}: {event.run.state.value}", flush=True
        )


def _run_launched(store: RunStore, run_id: str) -> int:
    from jupyter_pipeline.runners.local import LocalRunner

    run = store.get_run(run_id)
    pipeline = store.get_pipeline(run.id)
    if run.run_dir is None or pipeline is None:
        raise SystemExit(f"run {run.id} was not recorded by a launcher")
    run_dir = Path(run.run_dir)
    settings = json.loads((run_dir / SETTINGS).read_text())
    nb = read_notebook(run_dir / NOTEBOOK_COPY)
    runner = LocalRunner(
        store,
        max_parallel=settings.get("max_parallel"),
        cache=settings.get("cache", True),
        prewarm=settings.get("prewarm", True),
        fork=settings.get("fork", True),
        html=settings.get("html", False),
    )
    try:
        done = runner.run(
            pipeline,
            run.notebook,
            parameters=settings.get("overrides", run.parameters),
            output=run_dir / MERGED,
            on_event=_print_event,
            run_id=run.id,
            source_nb=nb,
        )
    except Exception as exc:
        # Recorded in the store by the runner; say it here too for runner.log.
        print(f"run {run.id} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        current = store.get_run(run.id)
        if not current.state.finished:
            store.update_run(
                run.id,
                state=RunState.failed,
                finished=time.time(),
                error=f"{type(exc).__name__}: {exc}",
            )
        return 1
    return 0 if done.state is RunState.succeeded else 1


def _watch_kfp(store: RunStore, run_id: str) -> int:
    from jupyter_pipeline.compile.config import load_config
    from jupyter_pipeline.runners.kfp import KfpError, KfpRunner

    run = store.get_run(run_id)
    settings: dict[str, Any] = {}
    if run.run_dir and (Path(run.run_dir) / SETTINGS).exists():
        settings = json.loads((Path(run.run_dir) / SETTINGS).read_text())
    config = load_config().merged(host=settings.get("host"))
    runner = KfpRunner(config=config, store=store, poll_interval=settings.get("poll_interval", 5))
    try:
        done = runner.watch(run.id, _print_event)
    except KfpError as exc:
        print(f"stopped following run {run.id}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0 if done.state is RunState.succeeded else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry of a runner process: ``python -m jupyter_pipeline.runners.launch run|watch-kfp``."""
    from jupyter_pipeline import skip_slow_optional_imports

    skip_slow_optional_imports()
    parser = argparse.ArgumentParser(prog="python -m jupyter_pipeline.runners.launch")
    parser.add_argument("mode", choices=("run", "watch-kfp"))
    parser.add_argument("--store", required=True)
    parser.add_argument("run_id")
    args = parser.parse_args(argv)
    store = RunStore(args.store)
    if args.mode == "run":
        return _run_launched(store, args.run_id)
    return _watch_kfp(store, args.run_id)


if __name__ == "__main__":  # pragma: no cover - the runner process
    sys.exit(main())
