"""The step runtime: what runs one pipeline step, on this machine or in a KFP container.

- :func:`build_step_notebook` turns the source notebook and one analyzed step into a step
  notebook (parameters, definitions, load inputs, the step's cells, save outputs).
- :func:`run_step` executes it with papermill in a fresh kernel (with optional pre-warming).
- :func:`merge_outputs` puts the executed steps' outputs back into the source notebook.
- :func:`save_value` / :func:`load_value` (and the ``serializers`` registry) pass data.

Exports are loaded lazily: step kernels import ``jupyter_pipeline.runtime.kernel``, and
that must not pull in pydantic, nbformat or papermill.
"""

from __future__ import annotations

import importlib
from typing import Any

# Bump when the step notebook layout or the saved-value formats change: runners put it in
# their cache keys, so values saved by an older runtime are never reused.
RUNTIME_VERSION = "2"  # 2: runtime 1 cached a step stopped by sys.exit() as succeeded

__all__ = [
    "RUNTIME_VERSION",
    "SavedValue",
    "Serializer",
    "StepExecutionError",
    "StepFailure",
    "StepRequest",
    "StepResult",
    "UnserializableValue",
    "build_step_notebook",
    "kill_kernel",
    "load_value",
    "load_values",
    "merge_outputs",
    "register_serializer",
    "run_step",
    "save_value",
    "save_values",
]

_WHERE = {
    "SavedValue": "api",
    "StepFailure": "api",
    "StepRequest": "api",
    "StepResult": "api",
    "build_step_notebook": "notebook",
    "merge_outputs": "notebook",
    "run_step": "execute",
    "kill_kernel": "execute",
    "StepExecutionError": "execute",
    "Serializer": "serializers",
    "UnserializableValue": "serializers",
    "load_value": "serializers",
    "load_values": "serializers",
    "register_serializer": "serializers",
    "save_value": "serializers",
    "save_values": "serializers",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
