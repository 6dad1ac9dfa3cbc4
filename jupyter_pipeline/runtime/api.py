"""The step runtime's contract: what a runner hands a step and what it gets back.

The same request runs a step on this machine (LocalRunner) and inside a KFP container
(the compiled component calls :func:`jupyter_pipeline.runtime.run_step` with one of these).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SavedValue", "StepFailure", "StepRequest", "StepResult"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepRequest(_Model):
    """Everything needed to run one step in a fresh kernel.

    Attributes:
        step_notebook: The generated step notebook (nbformat v4 JSON dict), from
            :func:`jupyter_pipeline.runtime.build_step_notebook`.
        step: Step name (for messages).
        source_notebook: Path of the user's notebook (for messages only; never written).
        inputs: For each input variable (and ``__state__:<name>`` pseudo-variable), the
            directory holding its saved value, as written by an earlier step's save.
        parameters: Parameter values to inject (papermill ``injected-parameters``).
        output_dir: Directory where the step saves each output under ``<var>/`` and its
            metrics as ``metrics.json``.
        outputs: Variables (and ``__state__:<name>``) to save.
        executed_notebook: Where the executed step notebook is written (always, even on failure).
        html: Also export the executed notebook to HTML beside it.
        cwd: Working directory of the kernel (the source notebook's folder locally).
        kernel_name: Kernel to start.
        log_path: File that receives the step's stdout/stderr as it runs.
        env: Extra environment variables for the kernel (added to this process's).
    """

    step_notebook: dict[str, Any]
    step: str
    source_notebook: str = ""
    inputs: dict[str, str] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    output_dir: str
    outputs: list[str] = Field(default_factory=list)
    executed_notebook: str
    html: bool = False
    cwd: str | None = None
    kernel_name: str = "python3"
    log_path: str | None = None
    env: dict[str, str] = Field(default_factory=dict)


class SavedValue(_Model):
    """One saved variable: where, how, and its fingerprint."""

    name: str
    path: str
    serializer: str
    type: str
    digest: str
    size: int


class StepFailure(_Model):
    """Why a step failed, pinned to the source notebook's cell."""

    step: str
    cell: int | None = Field(None, description="Source notebook cell index, if a user cell failed")
    ename: str
    evalue: str
    traceback: list[str] = Field(default_factory=list)
    message: str


class StepResult(_Model):
    """What running a step produced."""

    step: str
    status: Literal["succeeded", "failed"]
    outputs: list[SavedValue] = Field(default_factory=list)
    metrics: dict[str, float | int | str | bool] = Field(default_factory=dict)
    executed_notebook: str
    html: str | None = None
    failure: StepFailure | None = None
    stopped_at: int | None = Field(
        None,
        description="Source cell that ended the notebook cleanly (sys.exit(), sys.exit(0), "
        "raise SystemExit): the step succeeded, saved nothing, and no later cell runs",
    )
    started: float
    finished: float
    fork_fallback: str | None = Field(
        None,
        description="Why the kernel was spawned though a fork server was given (a slower "
        "start), when it was",
    )
