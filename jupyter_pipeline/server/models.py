"""The REST API's request and response models (pydantic): the wire contract with the lab
extension. The OpenAPI document (``/jupyter-pipeline/openapi.json``) and the TypeScript
types (``labextension/src/api/types.ts``, by ``scripts/gen_ts_types.py``) are generated
from these, and the core's own models (:class:`~jupyter_pipeline.model.Pipeline`,
:class:`~jupyter_pipeline.runners.plan.PlanItem`) travel inside them unchanged.

Pure pydantic: no tornado or jupyter_server import, so the generator runs without a server.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jupyter_pipeline.model import Pipeline, RunState
from jupyter_pipeline.runners.plan import PlanItem

__all__ = [
    "API_VERSION",
    "AnalyzeRequest",
    "AnalyzeResponse",
    "CompileRequest",
    "ErrorResponse",
    "EventMessage",
    "Info",
    "LogChunk",
    "OutputInfo",
    "RunCreated",
    "RunInfo",
    "RunList",
    "RunRequest",
    "StepInfo",
]

# Bumped on every incompatible change of these models; the sidebar compares it (handshake).
API_VERSION = 1

SplitMode = Literal["tags", "headings", "cells"]
Target = Literal["local", "kfp"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(_Model):
    """Every error answer (400, 403, 404, 409, 500).

    Attributes:
        code: Stable kebab-case identifier (``invalid-notebook``, ``not-found``…).
        message: One line for the user: what is wrong and what to do.
        details: Structured detail, e.g. ``{"diagnostics": [...]}`` for a notebook with errors.
    """

    code: str
    message: str
    details: Any = None


class Info(_Model):
    """``GET info``: the version handshake and the configured targets."""

    version: str = Field(description="Version of the server extension (the Python package).")
    engine_version: str = Field(description="Version of the step runtime (cache keys use it).")
    kfp_version: str | None = Field(description="Version of the kfp SDK, if installed.")
    targets: list[Target] = Field(description="Targets runs can be started on.")
    kfp_host: str | None = None
    default_target: Target = "local"
    api_version: int = API_VERSION


class _NotebookSource(_Model):
    """A notebook given by its path (relative to the server root) or as nbformat JSON."""

    path: str | None = Field(
        None,
        description="Notebook path relative to the server root. With `notebook`, where the "
        "unsaved content lives (relative data files resolve in its folder).",
    )
    notebook: dict[str, Any] | None = Field(
        None, description="nbformat 4 JSON, e.g. the editor's unsaved content (never written)."
    )
    split: SplitMode = "tags"

    @model_validator(mode="after")
    def _path_or_notebook(self) -> _NotebookSource:
        if self.path is None and self.notebook is None and not getattr(self, "rerun", None):
            raise ValueError("give `path` (relative to the server root) or `notebook` (JSON)")
        return self


class AnalyzeRequest(_NotebookSource):
    """``POST analyze``."""

    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameter overrides the plan should assume."
    )


class AnalyzeResponse(_Model):
    """``POST analyze``: the pipeline (with its diagnostics) and what a run would do now."""

    pipeline: Pipeline
    plan: list[PlanItem] = Field(
        description="Per step, `cached` or `will run` with the reason; empty when the "
        "notebook has error diagnostics (it cannot run)."
    )


class CompileRequest(_NotebookSource):
    """``POST compile``: answered with the KFP pipeline YAML as a download."""

    image: str | None = Field(None, description="Step image for steps without an image tag.")


class RunRequest(_NotebookSource):
    """``POST runs``."""

    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Parameter overrides (with `rerun`: on top of its)."
    )
    target: Target | None = Field(
        None, description="Default: the rerun run's target, else the server's default target."
    )
    cache: bool = Field(True, description="Reuse results of unchanged steps (KFP: its cache).")
    max_parallel: int | None = Field(
        None, ge=1, description="Steps at once (local target; default: the server's setting)."
    )
    rerun: str | None = Field(
        None,
        description="Run again the notebook copy recorded by this earlier run (with its "
        "parameters and target unless given): works after the notebook was edited.",
    )


class RunCreated(_Model):
    """``POST runs`` (202): the run is recorded and its runner started; follow it by events."""

    id: str
    state: RunState


class OutputInfo(_Model):
    """A saved output variable of a step."""

    type: str | None = Field(description="Python type name, when known (local runs).")
    size: int | None = Field(description="Bytes on disk, when known.")


class StepInfo(_Model):
    """One step of a run."""

    name: str
    state: RunState
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    cached: bool = False
    error: str | None = None
    error_cell: int | None = Field(None, description="Source notebook cell index that failed.")
    outputs: dict[str, OutputInfo] = Field(default_factory=dict)
    has_log: bool = False
    has_notebook: bool = False


class RunInfo(_Model):
    """``GET runs/{id}`` and each item of ``GET runs``."""

    id: str
    pipeline: str
    notebook: str = Field(description="Absolute path of the source notebook.")
    path: str | None = Field(description="Notebook path relative to the server root, if inside.")
    state: RunState
    backend: Target
    parameters: dict[str, Any] = Field(default_factory=dict)
    created: float
    started: float | None = None
    finished: float | None = None
    url: str | None = Field(None, description="The run's page in the KFP UI.")
    error: str | None = None
    steps: list[StepInfo] = Field(default_factory=list)
    has_merged_notebook: bool = False


class RunList(_Model):
    """``GET runs``: newest first."""

    runs: list[RunInfo]
    cursor: int = Field(
        description="The event stream's position when this list was read: subscribe with "
        "`?after=cursor` to miss no change made after it."
    )
    next_before: float | None = Field(
        None, description="Pass as `before` to get the next (older) page; null on the last."
    )


class LogChunk(_Model):
    """``GET runs/{id}/steps/{step}/log?offset=N``: the log from byte N."""

    text: str = Field(description="The log's bytes from `offset` (UTF-8, whole characters).")
    offset: int
    next_offset: int = Field(description="Ask for this offset next time (tailing).")
    size: int = Field(description="Size of the log file now.")
    finished: bool = Field(description="The step has finished: the log will not grow.")


class EventMessage(_Model):
    """One message of the event stream (``GET events``, Server-Sent Events).

    The SSE ``id`` is ``seq``: a reconnecting EventSource sends it back as
    ``Last-Event-ID`` and gets every later event.
    """

    seq: int = Field(description="Position in the store's event log (monotonic).")
    time: float
    kind: Literal["run", "step", "deleted"]
    run_id: str
    step: str | None = None
    state: RunState | None = Field(None, description="State of the run/step after the change.")
    run: RunInfo | None = Field(None, description="The run now (null once deleted).")
