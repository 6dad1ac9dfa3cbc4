"""The ExtensionApp: settings (traitlets, set in ``jupyter_server_config`` like any Jupyter
setting) and the objects built once at start-up (store, launchers, event hub)."""

from __future__ import annotations

import asyncio
import importlib.util
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Enum, Float, Int, Type, Unicode

from jupyter_pipeline.server.events import EventHub
from jupyter_pipeline.server.handlers import default_handlers
from jupyter_pipeline.server.service import PipelineService
from jupyter_pipeline.store import RunStore

__all__ = ["PipelineApp", "ServerState"]


@dataclass
class ServerState:
    """What the handlers share (``settings["jupyter_pipeline"]``)."""

    service: PipelineService
    hub: EventHub
    executor: ThreadPoolExecutor
    cancel_wait: float
    keepalive: float


class PipelineApp(ExtensionApp):
    """jupyter-pipeline's REST + event API (``/jupyter-pipeline/…``).

    Configure it as ``c.PipelineApp.<setting>`` in ``jupyter_server_config.py`` (or the
    JSON equivalent), or ``--PipelineApp.<setting>=…`` on the command line.
    """

    name = "jupyter_pipeline"
    load_other_extensions = True

    store_path = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Run store database. Default: the store the CLI uses ($JUPYTER_PIPELINE_STORE, "
        "else <jupyter data dir>/pipeline/runs.sqlite), so both see the same runs.",
    )
    runs_dir = Unicode(
        None,
        allow_none=True,
        config=True,
        help="Folder for the run folders (logs, executed notebooks, outputs) of runs started "
        "here. Default: runs/ beside the store database.",
    )
    max_parallel = Int(
        None, allow_none=True, config=True, help="Steps executing at once per local run."
    )
    cache = Bool(True, config=True, help="Reuse results of unchanged steps in local runs.")
    default_target = Enum(
        ["local", "kfp"], "local", config=True, help="Target of a run request naming none."
    )
    kfp_host = Unicode(
        None,
        allow_none=True,
        config=True,
        help="KFP API endpoint (default: the CLI's KFP config / KF_PIPELINES_ENDPOINT).",
    )
    kfp_namespace = Unicode(None, allow_none=True, config=True, help="KFP namespace.")
    kfp_image = Unicode(None, allow_none=True, config=True, help="Default KFP step image.")
    kfp_experiment = Unicode(None, allow_none=True, config=True, help="Default KFP experiment.")
    kfp_poll_interval = Float(
        5.0, config=True, help="Seconds between polls of a KFP run by its watcher process."
    )
    local_runner_class = Type(
        default_value="jupyter_pipeline.runners.launch.LocalLauncher",
        klass=object,
        config=True,
        help="Launcher of the `local` target: start(pipeline, nb, path, parameters) -> Run, "
        "cancel(run_id). Built once at start-up with (store, max_parallel=, cache=).",
    )
    kfp_runner_class = Type(
        default_value="jupyter_pipeline.runners.launch.KfpLauncher",
        klass=object,
        config=True,
        help="Launcher of the `kfp` target (same interface). Built once at start-up with "
        "(store, host=, namespace=, image=, experiment=, poll_interval=).",
    )
    event_poll_interval = Float(
        0.1, config=True, help="Seconds between reads of the store's event log (event stream)."
    )
    cancel_wait = Float(
        15.0,
        config=True,
        help="Seconds DELETE runs/{id} waits for the run to stop before answering 202.",
    )
    keepalive = Float(15.0, config=True, help="Seconds between event-stream keepalives.")
    worker_threads = Int(4, config=True, help="Threads for analysis, compiling and store reads.")

    def _kfp_available(self) -> bool:
        return importlib.util.find_spec("kfp") is not None

    def initialize_settings(self) -> None:
        """Build the store, the launchers and the event hub: once, at start-up."""
        assert self.serverapp is not None  # set before extensions initialize
        store = RunStore(self.store_path or None, runs_dir=self.runs_dir or None)
        local_class: Any = self.local_runner_class
        kfp_class: Any = self.kfp_runner_class
        launchers: dict[str, Any] = {
            "local": local_class(store, max_parallel=self.max_parallel, cache=self.cache)
        }
        kfp_host = self.kfp_host
        if self._kfp_available():
            launchers["kfp"] = kfp_class(
                store,
                host=self.kfp_host,
                namespace=self.kfp_namespace,
                image=self.kfp_image,
                experiment=self.kfp_experiment,
                poll_interval=self.kfp_poll_interval,
            )
            if kfp_host is None:
                from jupyter_pipeline.compile.config import ConfigError, load_config

                try:
                    kfp_host = load_config().host
                except ConfigError as exc:
                    self.log.warning("jupyter-pipeline: KFP config: %s", exc)
        service = PipelineService(
            store,
            self.serverapp.root_dir,
            launchers,
            default_target=self.default_target,
            kfp_host=kfp_host,
        )
        # The hub tails the event log on its own connection (see events.py).
        hub = EventHub(RunStore(store.path), service.run_info, interval=self.event_poll_interval)
        self.state = ServerState(
            service=service,
            hub=hub,
            executor=ThreadPoolExecutor(self.worker_threads, thread_name_prefix="jupyter-pipeline"),
            cancel_wait=self.cancel_wait,
            keepalive=self.keepalive,
        )
        self.settings["jupyter_pipeline"] = self.state
        self.log.info("jupyter-pipeline: store %s, targets %s", store.path, ", ".join(launchers))

    def initialize_handlers(self) -> None:
        """Routes under ``/jupyter-pipeline/``."""
        self.handlers.extend(default_handlers())

    async def stop_extension(self) -> None:
        """End event streams and worker threads; runs keep going in their own processes."""
        state = getattr(self, "state", None)
        if state is None:
            return
        await state.hub.stop()
        await asyncio.get_running_loop().run_in_executor(None, state.executor.shutdown)
