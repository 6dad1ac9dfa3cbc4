"""Load a finished step's saved values back into Python (a notebook, a script, a test).

``jupyter_pipeline.load_outputs("<run>", "<step>")`` reads what the run store recorded for the
step and loads each value with the serializer that saved it (the runtime's own
:func:`~jupyter_pipeline.runtime.serializers.load_values`), so a DataFrame comes back as a
DataFrame, two names for one object come back as one object, and a cached step loads from the
step cache exactly as a dependent step would. The sidebar's "load into kernel" inserts that
call in a new cell.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_pipeline.model import RunState
from jupyter_pipeline.runtime.kernel import STATE_PREFIX
from jupyter_pipeline.runtime.serializers import describe, load_values

__all__ = ["LoadedOutputs", "OutputsError", "describe_outputs", "load_outputs"]


class OutputsError(LookupError):
    """A step's saved values cannot be loaded; the message says why and what to do."""


class LoadedOutputs(dict[str, Any]):
    """The loaded values (name → value); shown as one short line per value, not their reprs.

    A notebook cell ending in ``load_outputs(...)`` would otherwise print every value's repr
    (a whole DataFrame); this lists what was loaded instead.
    """

    run_id: str = ""
    step: str = ""

    def _summary(self) -> list[str]:
        return [f"{name}: {type(value).__name__}" for name, value in self.items()]

    def __repr__(self) -> str:
        names = ", ".join(self._summary()) or "nothing"
        return f"<loaded from run {self.run_id}, step {self.step}: {names}>"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(repr(self))


def _open_store(store: Any) -> tuple[Any, bool]:
    from jupyter_pipeline.store import RunStore

    if isinstance(store, RunStore):
        return store, False
    return RunStore(store), True


def _step_outputs(store: Any, run_id: str, step: str) -> tuple[str, dict[str, str]]:
    """(full run id, name → saved directory) for a step, or a clear :class:`OutputsError`."""
    try:
        run = store.get_run(run_id)
    except KeyError as exc:
        raise OutputsError(exc.args[0] if exc.args else str(exc)) from None
    steps = {s.step: s for s in run.steps}
    if step not in steps:
        raise OutputsError(f"run {run.id} has no step {step!r}; its steps: {', '.join(steps)}")
    record = steps[step]
    paths = {k: v for k, v in record.outputs.items() if not k.startswith(STATE_PREFIX)}
    if record.state not in (RunState.succeeded, RunState.cached):
        why = f" ({record.error})" if record.error else ""
        raise OutputsError(
            f"step {step!r} of run {run.id} is {record.state.value}{why}; only a succeeded or "
            "cached step has saved values"
        )
    if run.backend == "kfp":
        raise OutputsError(
            f"run {run.id} ran on Kubeflow Pipelines: its values are artifacts in the cluster's "
            "object store, not files here; download them from the KFP UI"
            + (f" ({run.url})" if run.url else "")
        )
    for name, directory in paths.items():
        if not os.path.isdir(directory):
            raise OutputsError(
                f"value {name!r} of step {step!r} (run {run.id}) is gone from {directory}: the "
                "run or its cache entry was pruned; run the pipeline again"
            )
    return run.id, paths


def load_outputs(
    run_id: str,
    step: str,
    names: list[str] | tuple[str, ...] | None = None,
    *,
    into: dict[str, Any] | bool | None = None,
    store: Any = None,
) -> LoadedOutputs:
    """Load the values a step of a run saved for later steps.

    Args:
        run_id: Run id or a unique prefix of one (``jupyter-pipeline runs`` lists them).
        step: Step name.
        names: Only these values (default: every value the step saved).
        into: Where to put the values as variables: a namespace dict; ``None`` (default) means
            the interactive namespace when called from IPython/Jupyter (so the values become
            variables of the kernel, as in the step) and nowhere otherwise; ``False``: nowhere.
        store: A :class:`~jupyter_pipeline.store.RunStore` or the path of its database
            (default: the store the CLI and the server use).

    Returns:
        Name → value, in the step's output order.

    Raises:
        OutputsError: Unknown run or step, a step that did not succeed, a KFP run, a value
            that was pruned, or a name the step did not save.
    """
    db, owned = _open_store(store)
    try:
        full_id, paths = _step_outputs(db, run_id, step)
    finally:
        if owned:
            db.close()
    if names is not None:
        missing = [n for n in names if n not in paths]
        if missing:
            raise OutputsError(
                f"step {step!r} of run {full_id} saved no {', '.join(map(repr, missing))}; "
                f"it saved: {', '.join(paths) or 'nothing'}"
            )
        paths = {n: paths[n] for n in names}
    values = LoadedOutputs(load_values(paths))
    values.run_id, values.step = full_id, step
    namespace = _interactive_namespace() if into is None else into
    if isinstance(namespace, dict):  # not `if namespace`: an empty dict is a namespace too
        namespace.update(values)
    return values


def describe_outputs(run_id: str, step: str, *, store: Any = None) -> dict[str, dict[str, Any]]:
    """Type and size of each saved value of a step, without loading any: name → meta.

    Each entry has ``type`` (qualified type name), ``size`` (bytes on disk), ``serializer``
    and ``path``.

    Raises:
        OutputsError: As :func:`load_outputs`.
    """
    db, owned = _open_store(store)
    try:
        _, paths = _step_outputs(db, run_id, step)
    finally:
        if owned:
            db.close()
    described: dict[str, dict[str, Any]] = {}
    for name, directory in paths.items():
        meta = describe(directory)  # an alias's meta repeats its target's type and size
        described[name] = {
            "type": meta.get("type", ""),
            "size": int(meta.get("size", 0)),
            "serializer": meta.get("serializer", ""),
            "path": directory,
        }
    return described


def _interactive_namespace() -> dict[str, Any] | None:
    """The user namespace of the running IPython shell, if this is one."""
    import sys

    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    shell = get_ipython()
    return shell.user_ns if shell is not None else None
