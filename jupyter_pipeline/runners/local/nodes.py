"""A run's steps as the local scheduler sees them: the :class:`_Node` record and its phases.

Each step of a run is one ``_Node``: its place in the graph (dependencies, guards, rank on
the critical path), its phase beyond the recorded :class:`~jupyter_pipeline.model.RunState`,
its attempt's kernel, inputs, saved outputs and cache key. Kept apart from the scheduler so
that the bookkeeping (what a step is) reads separately from the loop (what happens next).
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import RunState, Step
from jupyter_pipeline.runtime.api import SavedValue, StepResult
from jupyter_pipeline.runtime.kernel import state_key

_FINISHED_OK = (RunState.succeeded, RunState.cached)
_POLL = 0.25  # seconds between checks of the store's cancel flag while waiting
# Progress events are handed to on_event in batches, this long after the first of a batch
# (a live display refreshes 4 times a second). Each batch reads the run from the store once:
# per event, that read grew with the number of steps and was the scheduler's largest cost.
_EMIT_EVERY = 0.2


class _Aborted(Exception):
    """Raised from ``ready()`` to stop a warming step (cancelled, skipped or cache hit)."""


# Node phases, beyond the final RunState.
# "draining": the step's outputs are saved (it counts as succeeded and frees its slot), its
# kernel is shutting down and papermill is writing the executed notebook.
_WAITING, _WARMING, _EXECUTING, _DRAINING, _DONE = (
    "waiting",
    "warming",
    "executing",
    "draining",
    "done",
)
# A cell that may end the notebook cleanly (papermill: sys.exit(), sys.exit(0), raise
# SystemExit); later steps wait for its step, so nothing after a stop runs.
_MAY_STOP = re.compile(r"\bSystemExit\b|\b(?:sys\.)?exit\s*\(|\bquit\s*\(")
_WATCH = 0.01  # seconds between looks for a running step's saved outputs
_NICE = 5  # CPU niceness of kernels of steps off the critical path


@dataclass
class _Node:
    step: Step
    index: int
    deps: list[str]
    step_nb: dict[str, Any]
    dir: Path
    phase: str = _WAITING
    rank: int = 1  # steps on the longest chain from here to the end (critical path first)
    depth: int = 1  # steps on the longest chain from a start to here
    critical: bool = True  # on a longest chain through the pipeline
    state: RunState = RunState.queued
    attempts: int = 0
    kernel_pid: int | None = None
    kernel_created: float | None = None
    warm_failed: bool = False  # its warm-up failed: launch it only once its inputs are ready
    go: threading.Event = field(default_factory=threading.Event)
    abort: str | None = None  # why ready() must raise
    inputs: dict[str, str] = field(default_factory=dict)
    input_digests: dict[str, str] = field(default_factory=dict)
    saved: dict[str, SavedValue] = field(default_factory=dict)
    resolved: bool = False  # its inputs are known (and its cache key, if it is cacheable)
    cache_key: str | None = None  # None for a step tagged cache:disabled: never computed
    key_parts: dict[str, Any] | None = None
    held: bool = False  # another run of this runner computes the same step (same key)
    claimed: bool = False  # this node holds its key's flight (see LocalRunner.flights)
    executed_notebook: str | None = None
    thread: threading.Thread | None = None
    gpus: int = 0  # devices it must hold while it runs (-1: run with the devices hidden)
    devices: list[str] | None = None  # the devices it holds
    # Earlier steps that may end the notebook (sys.exit()): this one starts only after
    # them, as in the notebook, but their failure does not skip it (unlike ``deps``).
    guards: list[str] = field(default_factory=list)

    @property
    def outputs(self) -> list[str]:
        return [*self.step.outputs, *(state_key(s) for s in self.step.state_outputs)]

    def saved_fields(self) -> dict[str, Any]:
        """Its saved outputs as the store records them: paths and digests by name."""
        return {
            "outputs": {k: v.path for k, v in self.saved.items()},
            "digests": {k: v.digest for k, v in self.saved.items()},
        }


def _as_dict(nb: Any) -> dict[str, Any]:
    return json.loads(json.dumps(nb))


def _describe_failure(step: str, payload: Any) -> tuple[str, int | None]:
    if isinstance(payload, StepResult) and payload.failure is not None:
        f = payload.failure
        msg = f.message or f"{f.ename}: {f.evalue}"
        return msg.splitlines()[0] if msg else f.ename, f.cell
    if isinstance(payload, StepResult):
        return f"step {step} failed", None
    if isinstance(payload, BaseException):
        text = str(payload).strip().splitlines()
        ename = getattr(payload, "ename", None) or type(payload).__name__  # from a driver
        return f"{ename}: {text[0] if text else ''}".rstrip(": "), None
    return f"step {step} failed", None
