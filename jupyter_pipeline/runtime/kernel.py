"""Kernel-side helpers called by the generated load and save cells of a step notebook.

Runs inside the step's kernel: standard library only at import time (the serializers import
numpy/pandas/pyarrow lazily), no output on success, and nothing left in the user's namespace
beyond the loaded variables.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from jupyter_pipeline.runtime.serializers import (
    UnserializableValue,
    load_value,
    save_values,
    value_dirname,
)

__all__ = [
    "METRICS_FILE",
    "OUTPUTS_FILE",
    "STATE_PREFIX",
    "InputLoadError",
    "UnserializableValue",
    "load_inputs",
    "save_outputs",
    "state_key",
]

STATE_PREFIX = "__state__:"


def state_key(name: str) -> str:
    """The input/output key under which a global-state pseudo-variable travels."""
    return STATE_PREFIX + name


OUTPUTS_FILE = "outputs.json"
METRICS_FILE = "metrics.json"


class InputLoadError(Exception):
    """An input of the step could not be loaded (message names it and its path)."""


def _get_state(name: str) -> Any:
    """Current value of a global-state pseudo-variable, or None if it was never touched."""
    if name == "random":
        import random

        return random.getstate()
    if name == "numpy.random":
        np = sys.modules.get("numpy")
        # numpy never imported in this kernel: its global RNG was never used here.
        return None if np is None else np.random.get_state()
    raise ValueError(f"unknown global state {name!r}")


def _set_state(name: str, state: Any) -> None:
    if name == "random":
        import random

        random.setstate(state)
    elif name == "numpy.random":
        import numpy as np

        np.random.set_state(state)
    else:
        raise ValueError(f"unknown global state {name!r}")


def load_inputs(namespace: dict[str, Any], inputs: dict[str, str]) -> None:
    """Load the step's inputs into the user namespace and restore global RNG states.

    Args:
        namespace: The kernel's ``globals()``.
        inputs: Variable (or ``__state__:<name>``) → directory of its saved value. A name
            missing here is simply not defined (the consumer sees ``NameError`` exactly as
            the notebook would when the producing branch did not run).

    Raises:
        InputLoadError: A value could not be read.
    """
    cache: dict[str, Any] = {}
    states: list[tuple[str, Any]] = []
    for name, directory in inputs.items():
        try:
            value = load_value(directory, cache)
        except Exception as exc:
            raise InputLoadError(
                f"cannot load input {name!r} from {directory}: {type(exc).__name__}: {exc}"
            ) from exc
        if name.startswith(STATE_PREFIX):
            states.append((name[len(STATE_PREFIX) :], value))
        else:
            namespace[name] = value
    # Last, so nothing done while loading can consume random numbers after the restore.
    for name, state in states:
        _set_state(name, state)


def _metric_value(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays
    if callable(item):
        try:
            value = item()
        except Exception:
            return None
        if isinstance(value, (bool, int, float, str)):
            return value
    try:
        return float(value)
    except Exception:
        return None


def save_outputs(
    namespace: dict[str, Any],
    output_dir: str,
    outputs: list[str],
    metrics: list[str] | tuple[str, ...] = (),
) -> None:
    """Save the step's outputs (and metrics) under ``output_dir``.

    Writes ``<output_dir>/<var>/`` per saved variable, ``outputs.json`` (the list of their
    ``meta.json`` records, each with its ``path``) and, if ``metrics`` is given,
    ``metrics.json``. A variable that is not defined (its branch did not run) is skipped.

    Raises:
        UnserializableValue: An output cannot be saved; the message names it and the fix.
    """
    os.makedirs(output_dir, exist_ok=True)
    values: dict[str, Any] = {}
    for name in outputs:
        if name.startswith(STATE_PREFIX):
            state = _get_state(name[len(STATE_PREFIX) :])
            if state is not None:
                values[name] = state
        elif name in namespace:
            values[name] = namespace[name]
        else:  # not defined: make sure an older attempt's value does not linger
            stale = os.path.join(output_dir, value_dirname(name))
            if os.path.isdir(stale):
                import shutil

                shutil.rmtree(stale)
    metas = save_values(values, output_dir)
    records = []
    for name, meta in metas.items():
        records.append(
            {**meta, "name": name, "path": os.path.join(output_dir, value_dirname(name))}
        )
    with open(os.path.join(output_dir, OUTPUTS_FILE), "w") as f:
        json.dump(records, f)
    if metrics:
        found = {}
        for name in metrics:
            if name in namespace:
                value = _metric_value(namespace[name])
                if value is not None:
                    found[name] = value
        with open(os.path.join(output_dir, METRICS_FILE), "w") as f:
            json.dump(found, f)
