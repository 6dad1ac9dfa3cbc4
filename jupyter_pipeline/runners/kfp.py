"""KfpRunner: submit a compiled pipeline to Kubeflow Pipelines, watch it, cancel it, schedule it.

Talks to the cluster through ``kfp.Client`` (host, namespace, bearer token or cookies from
the config file, ``KF_PIPELINES_*`` env vars or arguments). Before the client is built, one
``GET /apis/v2beta1/healthz`` tells apart the three ways a cluster can refuse us — not
reachable, token rejected (401/403), or an incompatible KFP (v1 API only, or a 1.x version)
— so each gets a one-line :class:`KfpError` instead of kfp's 25 s of retries.

Runs are recorded in the same :class:`~jupyter_pipeline.store.RunStore` as local runs
(``backend="kfp"``, ``external_id`` = KFP run id, ``url`` = the KFP UI link); polling maps
KFP's task states onto the run's :class:`~jupyter_pipeline.model.StepRun` states.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from jupyter_pipeline.compile.config import KfpConfig, load_config
from jupyter_pipeline.model import Pipeline, Run, RunState
from jupyter_pipeline.runners.base import RunEvent, resolve_parameters
from jupyter_pipeline.store import process_alive, process_started

__all__ = [
    "KfpError",
    "KfpRunner",
    "cron_expression",
    "map_state",
    "refresh_unwatched",
    "ui_link",
]

# KFP v2beta1 RuntimeState → our RunState.
_STATES = {
    "RUNTIME_STATE_UNSPECIFIED": RunState.queued,
    "PENDING": RunState.queued,
    "RUNNING": RunState.running,
    "PAUSED": RunState.running,
    "SUCCEEDED": RunState.succeeded,
    "SKIPPED": RunState.skipped,
    "FAILED": RunState.failed,
    "CANCELING": RunState.running,
    "CANCELED": RunState.cancelled,
}
_EPOCH_PREFIX = "1970-01-01"


class KfpError(Exception):
    """The cluster cannot be used: unreachable, token rejected, incompatible, or it refused."""


def map_state(state: Any) -> RunState:
    """Map a KFP v2 runtime state (string or enum) onto a :class:`RunState`."""
    return _STATES.get(
        str(state or "RUNTIME_STATE_UNSPECIFIED").rsplit(".", 1)[-1].upper(), RunState.queued
    )


def ui_link(host: str, run_id: str) -> str:
    """The KFP UI page of a run."""
    return f"{host.rstrip('/')}/#/runs/details/{run_id}"


def cron_expression(cron: str) -> str:
    """Turn a 5-field cron (``0 9 * * 1-5``) into KFP's 6-field one (seconds first).

    Raises:
        KfpError: Not 5 or 6 space-separated fields.
    """
    fields = cron.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise KfpError(
        f"--schedule {cron!r} is not a cron expression; give 5 fields (minute hour day month "
        "weekday, e.g. '0 9 * * 1-5') or KFP's 6 (seconds first)"
    )


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return None if value.year <= 1970 else value.timestamp()
    text = str(value)
    if not text or text.startswith(_EPOCH_PREFIX):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


class KfpRunner:
    """Submit, watch, cancel and schedule pipelines on a KFP v2 cluster.

    Args:
        host: KFP API endpoint (e.g. ``https://kubeflow.example.com/pipeline``); default from
            the config or ``KF_PIPELINES_ENDPOINT``.
        namespace: Kubernetes namespace (multi-user clusters).
        token: Bearer token (``existing_token``); default config / ``KF_PIPELINES_TOKEN``.
        cookies: Cookie header (e.g. ``authservice_session=…``) for Dex/oauth2-proxy setups.
        experiment: Default experiment name.
        store: Run store to record runs in (default: the shared default store).
        config: KFP config; loaded from file/env when omitted.
        poll_interval: Seconds between polls when watching.
        timeout: Seconds to wait for the cluster on each request of the preflight check.
    """

    def __init__(
        self,
        host: str | None = None,
        *,
        namespace: str | None = None,
        token: str | None = None,
        cookies: str | None = None,
        experiment: str | None = None,
        store: Any = None,
        config: KfpConfig | None = None,
        poll_interval: float = 5.0,
        timeout: float = 10.0,
    ):
        self.config = (config or load_config()).merged(
            host=host, namespace=namespace, token=token, cookies=cookies, experiment=experiment
        )
        self._store = store
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._client: Any = None

    # ------------------------------------------------------------------ plumbing
    @property
    def host(self) -> str:
        """The API endpoint in use."""
        host = self.config.host
        if not host:
            raise KfpError(
                "no KFP host: pass --host URL, set KF_PIPELINES_ENDPOINT, or put host = in the "
                "KFP config file"
            )
        if not host.startswith(("http://", "https://")):
            host = "https://" + host
        return host.rstrip("/")

    @property
    def store(self) -> Any:
        """The run store (opened on first use)."""
        if self._store is None:
            from jupyter_pipeline.store import RunStore

            self._store = RunStore()
        return self._store

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        if self.config.cookies:
            headers["Cookie"] = self.config.cookies
        return headers

    def check(self) -> dict[str, Any]:
        """Check the cluster answers, accepts our credentials and speaks KFP v2.

        Returns:
            The healthz answer.

        Raises:
            KfpError: One line saying which of unreachable / token rejected / incompatible.
        """
        import requests

        host = self.host
        url = f"{host}/apis/v2beta1/healthz"
        try:
            resp = requests.get(url, headers=self._headers(), timeout=self.timeout)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            raise KfpError(
                f"cannot reach KFP at {host} ({reason}); check --host and that the cluster "
                "(or your port-forward) is up"
            ) from None
        if resp.status_code in (401, 403):
            raise KfpError(
                f"KFP at {host} rejected the credentials (HTTP {resp.status_code}); pass a valid "
                "--token (or KF_PIPELINES_TOKEN) or session cookies"
            )
        if resp.status_code == 404:
            version = self._v1_version(host)
            if version is not None:
                raise KfpError(
                    f"KFP at {host} is version {version} and has only the v1 API; compiled "
                    "pipelines need KFP 2.x (upgrade the cluster)"
                )
            raise KfpError(
                f"{host} has no KFP API (GET /apis/v2beta1/healthz gave 404); check --host "
                "(it often ends in /pipeline)"
            )
        if resp.status_code != 200:
            raise KfpError(f"KFP at {host} is unhealthy (healthz gave HTTP {resp.status_code})")
        try:
            health = resp.json()
        except ValueError:
            raise KfpError(
                f"{host} answered healthz with something that is not JSON; is it KFP?"
            ) from None
        version = str(health.get("tag_name") or "")
        match = re.match(r"v?(\d+)\.", version)
        if match and int(match.group(1)) < 2:
            raise KfpError(
                f"KFP at {host} is version {version}; compiled pipelines need KFP 2.x "
                "(upgrade the cluster)"
            )
        return health

    def _v1_version(self, host: str) -> str | None:
        import requests

        try:
            resp = requests.get(
                f"{host}/apis/v1beta1/healthz", headers=self._headers(), timeout=self.timeout
            )
        except requests.RequestException:
            return None
        if resp.status_code != 200:
            return None
        try:
            return str(resp.json().get("tag_name") or "1.x")
        except ValueError:
            return "1.x"

    @property
    def client(self) -> Any:
        """A ``kfp.Client`` for the host (after :meth:`check`)."""
        if self._client is None:
            self.check()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # kfp.client directly: `kfp.Client` is missing when the compiler imported kfp
                # without its client (see jupyter_pipeline.compile.builder._kfp).
                try:
                    from kfp.client import Client
                except ImportError as exc:
                    from jupyter_pipeline.compile.builder import kfp_missing

                    raise KfpError(kfp_missing(exc)) from None

                kwargs: dict[str, Any] = {
                    "host": self.host,
                    "existing_token": self.config.token,
                    "cookies": self.config.cookies,
                }
                if self.config.namespace:
                    kwargs["namespace"] = self.config.namespace
                with contextlib.redirect_stdout(io.StringIO()):
                    self._client = Client(**kwargs)
        return self._client

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        """Call the client, turning API errors into one-line :class:`KfpError` s."""
        from kfp_server_api import ApiException

        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return fn()
        except ApiException as exc:
            if exc.status in (401, 403):
                raise KfpError(
                    f"KFP at {self.host} rejected the credentials while trying to {what} "
                    f"(HTTP {exc.status}); pass a valid --token or cookies"
                ) from None
            reason = (exc.reason or "").strip() or "error"
            raise KfpError(
                f"KFP at {self.host} refused to {what}: HTTP {exc.status} {reason}"
            ) from None
        except (OSError, ValueError) as exc:
            raise KfpError(f"could not {what} on KFP at {self.host}: {exc}") from None

    # ------------------------------------------------------------------ submit
    def _experiment_id(self, pipeline: Pipeline, experiment: str | None) -> str:
        name = experiment or self.config.experiment or pipeline.experiment or "Default"
        exp = self._call(
            f"create experiment {name!r}",
            lambda: self.client.create_experiment(name=name, namespace=self.config.namespace),
        )
        return exp.experiment_id

    def _package(
        self, pipeline: Pipeline, source_nb: NotebookNode | str | Path, tmp: str, **options: Any
    ) -> str:
        from jupyter_pipeline.compile import write_yaml

        path = str(Path(tmp) / "pipeline.yaml")
        write_yaml(pipeline, source_nb, path, config=self.config, **options)
        return path

    def submit(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        *,
        run_name: str | None = None,
        experiment: str | None = None,
        enable_caching: bool | None = None,
        source_nb: NotebookNode | None = None,
        **compile_options: Any,
    ) -> Run:
        """Compile and submit a run; record it (queued) in the run store.

        Args:
            pipeline: The analyzed pipeline.
            source_nb_path: Its notebook.
            parameters: Parameter overrides (type-checked against the notebook's).
            run_name: KFP run name (default: pipeline name and time).
            experiment: Experiment name (default: config, notebook metadata, "Default").
            enable_caching: Override every step's caching for this run.
            source_nb: The notebook already read from ``source_nb_path`` (not read again).
            **compile_options: Passed to the compiler (``image``, ``packages_mode``…).

        Returns:
            The recorded run (``external_id`` = KFP run id, ``url`` = KFP UI link).

        Raises:
            KfpError: The cluster cannot be used or refused the run.
            ParameterError: A parameter override is unknown or has the wrong type.
            CompileError: The pipeline cannot be compiled.
        """
        values = resolve_parameters(pipeline, parameters)
        name = run_name or f"{pipeline.name} {datetime.now():%Y-%m-%d %H-%M-%S}"
        with tempfile.TemporaryDirectory() as tmp:
            # Compile before contacting the cluster: a notebook that cannot compile must not
            # leave an experiment (or anything else) behind.
            package = self._package(pipeline, source_nb or source_nb_path, tmp, **compile_options)
            experiment_id = self._experiment_id(pipeline, experiment)
            result = self._call(
                "create the run",
                lambda: self.client.run_pipeline(
                    experiment_id=experiment_id,
                    job_name=name,
                    pipeline_package_path=package,
                    params=values,
                    enable_caching=enable_caching,
                ),
            )
        run_id = result.run_id
        return self.store.create_run(
            pipeline,
            notebook=str(source_nb_path),
            backend="kfp",
            parameters=values,
            external_id=run_id,
            url=ui_link(self.host, run_id),
        )

    def schedule(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        cron: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        experiment: str | None = None,
        source_nb: NotebookNode | None = None,
        **compile_options: Any,
    ) -> dict[str, str]:
        """Create a recurring run on a cron schedule.

        Arguments are those of :meth:`submit`; ``cron`` has 5 fields (or KFP's 6).

        Returns:
            ``{"id": recurring run id, "cron": the 6-field cron sent, "url": UI link}``.

        Raises:
            KfpError: Bad cron, or the cluster cannot be used or refused it.
        """
        cron6 = cron_expression(cron)
        values = resolve_parameters(pipeline, parameters)
        with tempfile.TemporaryDirectory() as tmp:
            package = self._package(pipeline, source_nb or source_nb_path, tmp, **compile_options)
            experiment_id = self._experiment_id(pipeline, experiment)  # after compiling
            rec = self._call(
                "create the recurring run",
                lambda: self.client.create_recurring_run(
                    experiment_id=experiment_id,
                    job_name=name or f"{pipeline.name} ({cron})",
                    cron_expression=cron6,
                    params=values,
                    pipeline_package_path=package,
                ),
            )
        rec_id = rec.recurring_run_id
        return {"id": rec_id, "cron": cron6, "url": f"{self.host}/#/recurringrun/details/{rec_id}"}

    # ------------------------------------------------------------------ monitor
    def refresh(self, run_id: str) -> Run:
        """Poll KFP once and record the run's and its steps' states in the store.

        Returns:
            The updated run.
        """
        run = self.store.get_run(run_id)
        if not run.external_id:
            raise KfpError(f"run {run.id} has no KFP run id; was it submitted to KFP?")
        remote = self._call("get the run", lambda: self.client.get_run(run.external_id))
        self._record(run, remote)
        return self.store.get_run(run.id)

    def _record(self, run: Run, remote: Any) -> None:
        # A cancel from another process (the server's DELETE) records the run and its steps
        # cancelled at once, while KFP still reports the run CANCELING and its tasks RUNNING
        # for a while: unfinished states are written only to what is still unfinished, in the
        # same statement (if_unfinished), so a cancelled run never comes back to life.
        pipeline = self.store.get_pipeline(run.id)
        names = _task_names(pipeline) if pipeline else {}
        details = _field(remote, "run_details")
        tasks = (_field(details, "task_details") or []) if details is not None else []
        now = time.time()
        for task in tasks:
            step = names.get(_field(task, "display_name") or "")
            if step is None:
                continue  # the root DAG, drivers, or tasks we did not make
            state = map_state(_field(task, "state"))
            error = _field(task, "error")
            message = _field(error, "message") if error is not None else None
            fields: dict[str, Any] = {
                "state": state,
                "started": _timestamp(_field(task, "start_time")),
                "finished": _timestamp(_field(task, "end_time")) if state.finished else None,
                "external_id": _field(task, "task_id"),
            }
            if message:
                fields["error"] = str(message).splitlines()[0]
            if state is RunState.running and fields["started"] is None:
                fields["started"] = now
            self.store.update_step(
                run.id,
                step,
                if_unfinished=not state.finished,
                **{k: v for k, v in fields.items() if v is not None},
            )
        state = map_state(_field(remote, "state"))
        fields = {"state": state}
        started = _timestamp(_field(remote, "created_at"))
        if started and run.started is None and state is not RunState.queued:
            fields["started"] = started
        if state.finished:
            fields["finished"] = _timestamp(_field(remote, "finished_at")) or now
            error = _field(remote, "error")
            if error is not None and _field(error, "message"):
                fields["error"] = str(_field(error, "message")).splitlines()[0]
            # Steps KFP never started: cancelled with the run, skipped after a failure.
            leftover = RunState.cancelled if state is RunState.cancelled else RunState.skipped
            for step in self.store.get_run(run.id).steps:
                if not step.state.finished:
                    self.store.update_step(run.id, step.step, state=leftover)
        self.store.update_run(run.id, if_unfinished=not state.finished, **fields)

    def watch(
        self,
        run_id: str,
        on_event: Callable[[RunEvent], None] | None = None,
        *,
        timeout: float | None = None,
    ) -> Run:
        """Poll until the run finishes, calling ``on_event`` on every state change.

        Returns:
            The finished run (or the last seen one if ``timeout`` passed).
        """
        seen: dict[str | None, RunState] = {}
        deadline = time.monotonic() + timeout if timeout else None
        # This process watches the run: others need not refresh it (refresh_unwatched).
        self.store.update_run(
            run_id,
            pid=os.getpid(),
            pid_created=process_started(os.getpid()),
            host=socket.gethostname(),
        )
        while True:
            run = self.refresh(run_id)
            if not run.state.finished and self.store.cancel_requested(run.id):
                # `jupyter-pipeline cancel` (any process) flags the run; the watcher acts.
                self.cancel(run)
                run = self.store.get_run(run.id)
            if on_event is not None:
                for step in run.steps:
                    if seen.get(step.step) is not step.state:
                        seen[step.step] = step.state
                        on_event(RunEvent("step", run, step.step))
                if seen.get(None) is not run.state:
                    seen[None] = run.state
                    on_event(RunEvent("run", run))
            if run.state.finished or (deadline and time.monotonic() > deadline):
                return run
            time.sleep(self.poll_interval)

    def run(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        parameters: Mapping[str, Any] | None = None,
        output: str | Path | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
    ) -> Run:
        """Submit and watch to the end (the :class:`~jupyter_pipeline.runners.Runner` interface).

        ``output`` (a merged notebook) is not supported on KFP: the executed step notebooks
        stay artifacts in the cluster's object store.
        """
        if output is not None:
            raise KfpError("--output (merged notebook) works for local runs only")
        run = self.submit(pipeline, source_nb_path, parameters)
        return self.watch(run.id, on_event)

    def cancel(self, run: Run | str) -> bool:
        """Terminate a KFP run and record it cancelled.

        Args:
            run: The run (or its id in the store). Its host is taken from its UI link when
                this runner has none.

        Returns:
            True if a termination was sent; False if the run had already finished.
        """
        record = self.store.get_run(run) if isinstance(run, str) else run
        if record.backend != "kfp" or not record.external_id:
            raise KfpError(f"run {record.id} is not a KFP run")
        if not self.config.host and record.url and "/#/" in record.url:
            self.config = self.config.merged(host=record.url.split("/#/", 1)[0])
        if record.state.finished:
            return False
        self._call("terminate the run", lambda: self.client.terminate_run(record.external_id))
        self.store.update_run(record.id, state=RunState.cancelled, finished=time.time())
        for step in record.steps:
            if not step.state.finished:
                self.store.update_step(record.id, step.step, state=RunState.cancelled)
        return True


def _task_names(pipeline: Pipeline) -> dict[str, str]:
    """KFP task display names and task keys → step names (as the compiler names them)."""
    from jupyter_pipeline.compile.builder import display_names, task_names

    out: dict[str, str] = {}
    for step_name, task in task_names(pipeline).items():
        out[step_name] = step_name
        out[task] = step_name
    for step_name, display in display_names(pipeline).items():
        out[display] = step_name
    return out


def _watched(store: Any, run: Run) -> bool:
    """True while a process watches ``run`` (its recorded watcher is alive, or elsewhere)."""
    pid, created, host, _ = store.runner_of(run.id)
    if pid is None:
        return False
    return host != socket.gethostname() or process_alive(pid, created)


def refresh_unwatched(
    store: Any, runs: Iterable[Run], config: KfpConfig | None = None
) -> dict[str, str]:
    """Poll KFP once for each unfinished KFP run that no live process watches.

    A run submitted without ``--watch`` (or whose watcher died) would otherwise read
    ``running`` forever in the store, and never be pruned. Its host is taken from its UI
    link. ``runs``/``show``/``runs --prune`` and the server's run list call this.

    Returns:
        Run id → why its state is unknown, for each run whose KFP host could not be asked
        (it is not refreshed; do not show it as running).
    """
    unknown: dict[str, str] = {}
    for run in runs:
        if run.backend != "kfp" or run.state.finished or not run.external_id:
            continue
        if _watched(store, run):
            continue
        host = run.url.split("/#/", 1)[0] if run.url and "/#/" in run.url else None
        try:
            KfpRunner(host, store=store, config=config).refresh(run.id)
        except (KfpError, ImportError) as exc:
            unknown[run.id] = f"state unknown: nobody watches it and {exc}"
    return unknown
