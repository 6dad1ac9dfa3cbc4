"""Cache keys of a run's steps, and single flight of one key across a runner's runs.

A step's key digests its code, inputs, parameters, environment and the files it reads
(:class:`~jupyter_pipeline.runners.cache.StepCache`). :class:`KeyFlights` (set by a sweep,
whose trials start the same shared steps at the same moment) lets one run compute a key
while the others wait for its cache entry; :class:`_KeyedExecution` adds the key, the
cache look-up and the claim/release of a key's flight to a run's state.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

from jupyter_pipeline.model import RunState
from jupyter_pipeline.runners.cache import StepCache, files_read, step_code
from jupyter_pipeline.runners.local.nodes import _Node
from jupyter_pipeline.runners.local.state import _ExecutionState


class KeyFlights:
    """Which cache keys a run of one runner is computing right now.

    A step whose key another run is computing waits for that result (a cache hit once it is
    published) instead of computing it a second time; if the other run fails or is
    cancelled, the key is released and the waiting step computes it itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[str, str] = {}
        self._failed: dict[str, tuple[str, str, int | None]] = {}

    def fail(self, key: str, failure: tuple[str, str, int | None]) -> None:
        """Record that computing ``key`` failed: ``(run id, error, source cell)``.

        The same code on the same inputs fails the same way, so the runs waiting for it
        fail with it instead of computing it again (a flaky step has ``retry:N``).
        """
        with self._lock:
            self._failed[key] = failure

    def failure(self, key: str) -> tuple[str, str, int | None] | None:
        """How computing ``key`` failed in another run, if it did."""
        with self._lock:
            return self._failed.get(key)

    def claim(self, key: str, owner: str) -> bool:
        """Take ``key`` for ``owner``; False if someone else holds it."""
        with self._lock:
            return self._owners.setdefault(key, owner) == owner

    def release(self, key: str, owner: str) -> None:
        """Give ``key`` back (only its owner can)."""
        with self._lock:
            if self._owners.get(key) == owner:
                del self._owners[key]


class _KeyedExecution(_ExecutionState):
    """A run's state, with its steps' cache keys and their single flight."""

    def key(self, node: _Node) -> str:
        what: dict[str, Any] = dict(
            code=step_code(node.step_nb),
            inputs=node.input_digests,
            parameters=self.injected_parameters(node.step),
            outputs=node.outputs,
            kernel_name=self.pipeline.kernel_name,
            env=node.step.settings.env,
            files=files_read(node.step_nb, self.source_path.parent),
        )
        node.key_parts = StepCache.key_parts(**what)  # kept with the entry, for plans' reasons
        return StepCache.key(**what)

    def claim(self, node: _Node) -> bool:
        """Take the node's key unless another run computes it; True if the node changed.

        The node becomes held (another run computes its key), or failed (another run's
        computation of its key failed: the same code on the same inputs). Only a sweep's
        runner has flights; a step that is not cached cannot be shared.
        """
        flights = self.runner.flights
        if flights is None or node.cache_key is None or node.claimed:
            return False
        if not (self.runner.cache_enabled and self.cacheable(node)):
            return False
        failed = flights.failure(node.cache_key)
        if failed is not None:
            run_id, error, cell = failed
            node.held = False
            self.end_early(node, "skipped")
            self.set_step(
                node,
                state=RunState.failed,
                finished=time.time(),
                error=f"failed in run {run_id} with the same inputs: {error}",
                error_cell=cell,
            )
            return True
        node.claimed = flights.claim(node.cache_key, f"{self.run_id}/{node.step.name}")
        was_held, node.held = node.held, not node.claimed
        return was_held != node.held

    def release(self, node: _Node) -> None:
        """Give the node's key back: its result is in the cache, or it will not be."""
        if node.claimed and self.runner.flights is not None and node.cache_key is not None:
            self.runner.flights.release(node.cache_key, f"{self.run_id}/{node.step.name}")
        node.claimed = node.held = False

    def cacheable(self, node: _Node) -> bool:
        return node.step.settings.cache is not False

    def try_cache(self, node: _Node) -> bool:
        if not (self.runner.cache_enabled and self.cacheable(node)):
            return False
        assert node.cache_key is not None
        entry = self.runner.cache.lookup(node.cache_key, node.outputs)
        if entry is None:
            return False
        self.end_early(node, "cached")
        now = time.time()
        self.run_started(now)
        node.saved = {v.name: v for v in entry.outputs}
        executed = log = None
        if entry.executed_notebook is not None:
            executed = node.dir / "executed.ipynb"
            shutil.copy2(entry.executed_notebook, executed)
            node.executed_notebook = str(executed)
        if entry.log is not None:
            log = node.dir / "log.txt"
            shutil.copy2(entry.log, log)
        self.set_step(
            node,
            state=RunState.cached,
            started=now,
            finished=now,
            executed_notebook=str(executed) if executed else None,
            log_path=str(log) if log else None,
            **node.saved_fields(),
            metrics=entry.metrics,
            cache_key=node.cache_key,
        )
        return True
