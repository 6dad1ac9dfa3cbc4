"""LocalRunner: run a pipeline's steps as fresh kernels on this machine, in parallel.

Scheduling model. One scheduler loop (the thread that called :meth:`LocalRunner.run`) owns
all state; each step attempt runs :func:`jupyter_pipeline.runtime.run_step` in a worker
thread that talks back through a queue. Two separate budgets:

* **execution slots** (``max_parallel``): steps whose inputs are ready and that are running
  their own cells. A step is only ever *given* a slot when its dependencies are done.
* **warming kernels** (``prewarm_limit``): steps started early, whose kernel boots and runs
  parameters and definitions (imports, functions) while their dependencies still run; they
  then block in ``ready()`` until the scheduler gives them a slot and their inputs.

Warming kernels never hold an execution slot, so they cannot keep a ready step from running;
when a slot frees, a warm step that has become ready goes first (its kernel is already up).

Kernels are forked from a per-run fork server (:mod:`jupyter_pipeline.runtime.forkserver`)
whose zygote has imported ipykernel and the libraries the steps import, when that is
faithful (else spawned as usual); ``fork=False`` always spawns.

Every state change is written to the run store at once, so ``show``/the sidebar (other
processes) see progress live and a killed runner loses nothing already recorded.

Modules, one concern each:

* :mod:`.runner` — the :class:`LocalRunner` facade (run, submit, wait, cancel) and
  :func:`cancel_run` for runs of other processes;
* :mod:`.execution` — the scheduling loop of one run and how it ends;
* :mod:`.attempts` — one attempt of a step: its worker thread and its result;
* :mod:`.keys` — cache keys, and :class:`KeyFlights` (single flight of a key across runs);
* :mod:`.state` — the run's state and the bookkeeping the others share;
* :mod:`.nodes` — a step as the scheduler sees it (:class:`~.nodes._Node`) and its phases.
"""

from __future__ import annotations

from jupyter_pipeline.runners.local.keys import KeyFlights
from jupyter_pipeline.runners.local.runner import LocalRunner, cancel_run

__all__ = ["KeyFlights", "LocalRunner", "cancel_run"]
