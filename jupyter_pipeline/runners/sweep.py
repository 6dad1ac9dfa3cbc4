"""Parameter sweeps on this machine: many trials of one pipeline that share unchanged steps.

The analysis knows which parameters each step reads, so a sweep splits the pipeline in two:
the steps that do not (transitively) read a swept parameter compute the same thing in every
trial and run once; the rest runs once per trial. Each trial is an ordinary run of the store
(tagged with the sweep's id), so ``runs``, ``show``, ``logs`` and ``cancel`` work on it.

How sharing happens: every trial is a run of one :class:`LocalRunner` whose step cache is on
and whose :class:`~jupyter_pipeline.runners.local.KeyFlights` lets one step computation per
cache key be in flight. A trial reaching a shared step that another trial is computing waits
for it and takes the result from the cache (``cached`` in its record); a step that reads only
some of the swept parameters is thus computed once per distinct value of those, not once per
trial. Up to ``max_parallel`` trials run at once.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import os
import random as _random
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_pipeline.model import Pipeline, RunState, Sweep
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.base import (
    EventCallback,
    ParameterError,
    RunEvent,
    check_parameter,
    resolve_parameters,
)
from jupyter_pipeline.store import RunStore, process_alive

__all__ = [
    "SweepPlan",
    "SweepRunner",
    "cancel_sweep",
    "dependent_steps",
    "parse_grid",
    "parse_values",
    "plan_sweep",
]

_POLL = 0.1  # seconds between looks at the trials and the sweep's cancel flag


def parse_values(raw: str) -> list[Any]:
    """Split ``0.01,0.1,1`` (or ``'a,b',[1,2]``) at its top-level commas into values.

    Each value parses like ``-p``: a Python literal when it is one, else a string. Commas
    inside brackets or quotes do not split (``[1,2],[3]`` is two lists).
    """
    parts: list[str] = []
    depth, quote, start = 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            if ch == quote and raw[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    values = []
    for part in parts:
        text = part.strip()
        try:
            values.append(ast.literal_eval(text))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            values.append(text)
    return values


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """Parse ``-g NAME=V1,V2,…`` items into ``{name: values}`` (in the order given).

    Raises:
        ParameterError: An item is not ``NAME=VALUES``, has an empty value, or names a
            parameter twice.
    """
    axes: dict[str, list[Any]] = {}
    for item in items:
        name, eq, raw = item.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise ParameterError(f"-g {item!r}: write NAME=V1,V2,…, e.g. -g lr=0.01,0.1,1")
        if name in axes:
            raise ParameterError(f"-g {item!r}: {name} is swept twice; give its values once")
        values = parse_values(raw)
        if any(v == "" for v in values):
            raise ParameterError(f"-g {item!r}: an empty value; write NAME=V1,V2,…")
        axes[name] = values
    return axes


def dependent_steps(pipeline: Pipeline, names: Sequence[str]) -> list[str]:
    """Steps that read one of ``names`` or run after (or on data of) a step that does.

    Steps come in notebook order and only depend on earlier ones, so one pass suffices.
    """
    swept = set(names)
    dependent: list[str] = []
    for step in pipeline.steps:
        upstream = {*step.depends_on, *step.input_sources.values(), *step.state_inputs.values()}
        if swept & set(step.parameters) or upstream & set(dependent):
            dependent.append(step.name)
    return dependent


@dataclass
class SweepPlan:
    """What a sweep runs.

    Attributes:
        axes: Swept parameter → values (type-checked, ints widened for float parameters).
        trials: Each trial's values of the swept parameters, in order.
        base: The other parameters' values (defaults with ``-p`` overrides applied).
        dependent: Steps run once per trial (notebook order).
        shared: Steps run once for the whole sweep.
    """

    axes: dict[str, list[Any]]
    trials: list[dict[str, Any]]
    base: dict[str, Any]
    dependent: list[str]
    shared: list[str] = field(default_factory=list)


def plan_sweep(
    pipeline: Pipeline,
    axes: Mapping[str, Sequence[Any]],
    overrides: Mapping[str, Any] | None = None,
    *,
    sample: int | None = None,
    seed: int | None = None,
) -> SweepPlan:
    """Check the axes against the pipeline's parameters and list the trials.

    Args:
        pipeline: The analyzed pipeline.
        axes: Parameter → values to try.
        overrides: Fixed values of other parameters (``-p``).
        sample: Run only this many trials, drawn without replacement from the full grid.
        seed: Seed of that draw (same seed, same trials).

    Raises:
        ParameterError: Unknown parameter, a value of the wrong type, a parameter both
            swept and fixed, no values, or a bad ``sample``.
    """
    known = {p.name: p for p in pipeline.parameters}
    if not axes:
        raise ParameterError("nothing to sweep: give at least one -g NAME=V1,V2,…")
    checked: dict[str, list[Any]] = {}
    for name, values in axes.items():
        if name not in known:
            listed = ", ".join(known) or "none (the notebook has no parameters cell)"
            raise ParameterError(f"unknown parameter {name!r}; known parameters: {listed}")
        if overrides and name in overrides:
            raise ParameterError(f"{name} is both swept (-g) and fixed (-p); choose one")
        if not values:
            raise ParameterError(f"-g {name}: no values")
        checked[name] = [check_parameter(known[name], v) for v in values]
    base = resolve_parameters(pipeline, overrides)
    for name in checked:
        base.pop(name)
    names = list(checked)
    combos = itertools.product(*checked.values())
    trials = [dict(zip(names, combo, strict=True)) for combo in combos]
    if sample is not None:
        if sample < 1:
            raise ParameterError("--random N: N must be at least 1")
        if sample < len(trials):
            picked = sorted(_random.Random(seed).sample(range(len(trials)), sample))
            trials = [trials[i] for i in picked]
    dependent = dependent_steps(pipeline, names)
    shared = [s.name for s in pipeline.steps if s.name not in dependent]
    return SweepPlan(axes=checked, trials=trials, base=base, dependent=dependent, shared=shared)


@dataclass(frozen=True)
class SweepEvent:
    """Progress of a sweep: a trial's run changed (``run``/``step``/``warming``) or started."""

    trial: int
    event: RunEvent


class SweepRunner:
    """Run a :class:`SweepPlan` on this machine; see the module docstring.

    Args:
        store: Where the sweep and its trial runs are recorded.
        max_parallel: Trials running at once, and steps at once within a trial (default:
            CPU count).
        cache: Also reuse results of earlier runs from the step cache. With ``False`` the
            trials still share steps, through a cache private to this sweep.
        prewarm, fork, html, run_step, allow_cpu: As for
            :class:`~jupyter_pipeline.runners.LocalRunner`.
    """

    # One fork server for all trials (False: one per trial, as before; for bench/sweep.py).
    share_fork_server = True

    def __init__(
        self,
        store: RunStore,
        *,
        max_parallel: int | None = None,
        cache: bool = True,
        prewarm: bool = True,
        fork: bool = True,
        html: bool = False,
        run_step: Callable[..., Any] | None = None,
        allow_cpu: bool = False,
    ):
        self.store = store
        self.allow_cpu = allow_cpu
        self.max_parallel = max(1, max_parallel or os.cpu_count() or 1)
        self.cache = cache
        self.prewarm = prewarm
        self.fork = fork
        self.html = html
        self.run_step = run_step
        self.cancelled = threading.Event()

    def request_cancel(self) -> None:
        """Stop the sweep: running trials are cancelled, the others never start."""
        self.cancelled.set()

    def run(
        self,
        pipeline: Pipeline,
        source_nb_path: str | Path,
        plan: SweepPlan,
        *,
        metric: str | None = None,
        maximize: bool = True,
        on_event: Callable[[SweepEvent], None] | None = None,
        on_start: Callable[[Sweep], None] | None = None,
    ) -> Sweep:
        """Run every trial of ``plan``; return the finished sweep.

        A failing trial fails alone (the sweep ends ``failed``, the others run on). SIGTERM
        (``jupyter-pipeline cancel SWEEP``, when called from the main thread) and
        :meth:`request_cancel` cancel the running trials and skip the rest.

        Args:
            pipeline: The analyzed pipeline.
            source_nb_path: The user's notebook (read, never written).
            plan: From :func:`plan_sweep`.
            metric: Metric that ranks the trials (default: the pipeline's first metric).
            maximize: Larger is better (else smaller).
            on_event: Called with every trial's progress.
            on_start: Called once with the recorded sweep, before any trial starts.

        Raises:
            GpuUnavailable: A step wants more GPUs than this machine has (and not
                ``allow_cpu``); nothing is recorded then.
        """
        from jupyter_pipeline.runners.local import KeyFlights, LocalRunner

        if metric is None and pipeline.metrics:
            metric = pipeline.metrics[0].name
        private_cache = None if self.cache else Path(tempfile.mkdtemp(prefix="jp-sweep-cache-"))
        runner = LocalRunner(
            self.store,
            max_parallel=self.max_parallel,
            cache=True,
            cache_dir=private_cache,
            prewarm=self.prewarm,
            html=self.html,
            run_step=self.run_step,
            fork=self.fork,
            allow_cpu=self.allow_cpu,
        )
        runner.flights = KeyFlights()
        # Every trial runs the same notebook's kernels (same spec, cwd and pre-imports;
        # env: tags spawn anyway): one fork server for the sweep, not one per trial.
        runner.shared_fork_servers = {} if self.share_fork_server else None
        source = Path(source_nb_path).absolute()
        # Refuse GPU steps this machine cannot serve before anything is recorded (what every
        # trial's submit would raise).
        runner._check_gpus(pipeline, source, read_notebook(source))
        sweep = self.store.create_sweep(
            pipeline=pipeline.name,
            notebook=str(source),
            axes=plan.axes,
            trials=plan.trials,
            parameters=plan.base,
            shared_steps=plan.shared,
            metric=metric,
            maximize=maximize,
            pid=os.getpid(),
        )
        if on_start is not None:
            on_start(sweep)
        in_main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, lambda *_: self.request_cancel()) if in_main else None
        try:
            self._loop(runner, pipeline, source, plan, sweep.id, on_event)
        except BaseException:
            self.cancelled.set()
            self._stop(runner, sweep.id)
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, old or signal.SIG_DFL)
            runner.close_shared_fork_servers()
            if private_cache is not None:
                shutil.rmtree(private_cache, ignore_errors=True)
        return self.store.get_sweep(sweep.id)

    def _loop(
        self,
        runner: Any,
        pipeline: Pipeline,
        source: Path,
        plan: SweepPlan,
        sweep_id: str,
        on_event: Callable[[SweepEvent], None] | None,
    ) -> None:
        pending = list(enumerate(plan.trials))
        active: dict[str, int] = {}  # run id → trial index
        last_poll = 0.0
        while pending or active:
            now = time.monotonic()
            if now - last_poll >= 0.25:
                last_poll = now
                if self.store.sweep_cancel_requested(sweep_id):
                    self.cancelled.set()
            if self.cancelled.is_set():
                break
            while pending and len(active) < self.max_parallel:
                index, values = pending.pop(0)
                run = runner.submit(
                    pipeline,
                    source,
                    parameters={**plan.base, **values},
                    on_event=_trial_events(index, on_event),
                )
                self.store.attach_trial(sweep_id, run.id, index)
                active[run.id] = index
            for run_id in list(active):
                if self.store.get_run(run_id).state.finished:
                    runner.wait(run_id)  # its thread ends right after recording the end
                    del active[run_id]
            time.sleep(_POLL)
        if self.cancelled.is_set():
            self._stop(runner, sweep_id)
            return
        sweep = self.store.get_sweep(sweep_id)
        failed = [t.index for t in sweep.trials if t.state is not RunState.succeeded]
        self.store.update_sweep(
            sweep_id,
            state=RunState.failed if failed else RunState.succeeded,
            finished=time.time(),
            error=f"trial {', '.join(map(str, failed))} did not succeed" if failed else None,
        )

    def _stop(self, runner: Any, sweep_id: str) -> None:
        """Cancel every running trial, wait for their kernels to be gone, record it."""
        run_ids = [t.run_id for t in self.store.get_sweep(sweep_id).trials if t.run_id]
        for run_id in run_ids:
            with contextlib.suppress(Exception):
                runner.cancel(run_id)
        for run_id in run_ids:
            runner.wait(run_id, timeout=30)
        self.store.update_sweep(
            sweep_id, state=RunState.cancelled, finished=time.time(), error="cancelled"
        )


def _trial_events(
    index: int, on_event: Callable[[SweepEvent], None] | None
) -> EventCallback | None:
    if on_event is None:
        return None

    def forward(event: RunEvent) -> None:
        on_event(SweepEvent(trial=index, event=event))

    return forward


def cancel_sweep(store: RunStore, sweep_id: str) -> bool:
    """Cancel a sweep that runs in another process (or whose process is gone).

    Flags the sweep and its unfinished trials (their runner polls both flags) and sends the
    sweep's process SIGTERM. If that process is gone, the trials are cleaned up here.

    Returns:
        True if the sweep was still going.
    """
    from jupyter_pipeline.runners.local import cancel_run

    sweep = store.get_sweep(sweep_id)
    if sweep.state.finished:
        return False
    store.update_sweep(sweep.id, cancel_requested=True)
    pid, created, _host = store.sweep_runner(sweep.id)
    for trial in sweep.trials:
        if trial.run_id and not trial.state.finished:
            cancel_run(store, trial.run_id)  # flags it: no SIGTERM, trials run in threads
    if pid and pid != os.getpid() and process_alive(pid, created):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    elif not (pid and process_alive(pid, created)):
        store.update_sweep(
            sweep.id, state=RunState.cancelled, finished=time.time(), error="cancelled"
        )
    return True
