"""Runners: execute a :class:`~jupyter_pipeline.model.Pipeline` and record it in the run store.

``LocalRunner`` runs steps as kernels on this machine; ``KfpRunner`` (``runners/kfp.py``)
submits to Kubeflow Pipelines. Both follow :class:`~jupyter_pipeline.runners.base.Runner`
and write the same :class:`~jupyter_pipeline.model.Run` records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jupyter_pipeline.runners.base import RunEvent, Runner, resolve_parameters

if TYPE_CHECKING:
    from jupyter_pipeline.runners.local import LocalRunner

__all__ = ["LocalRunner", "RunEvent", "Runner", "resolve_parameters"]


def __getattr__(name: str) -> Any:
    # LocalRunner pulls in the step runtime (papermill); import it only when asked for.
    if name == "LocalRunner":
        from jupyter_pipeline.runners.local import LocalRunner

        return LocalRunner
    raise AttributeError(name)
