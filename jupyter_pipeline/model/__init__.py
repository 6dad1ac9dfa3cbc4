"""Typed models: the one contract between analysis, compiler, runners, store, server and UI.

Everything that crosses a room boundary is one of these pydantic models, so it validates,
serializes to JSON (``--json``, the REST API) and generates TypeScript types from one source.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Definition",
    "Diagnostic",
    "Edge",
    "EdgeKind",
    "Metric",
    "Parameter",
    "Pipeline",
    "Run",
    "RunState",
    "Severity",
    "Step",
    "StepRun",
    "StepSettings",
    "Sweep",
    "SweepTrial",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Severity(str, Enum):
    """How bad a diagnostic is: errors stop compile and run, warnings and info do not."""

    error = "error"
    warning = "warning"
    info = "info"


class Diagnostic(_Model):
    """Something doubtful found in the notebook, pinned to a cell.

    Attributes:
        code: Stable kebab-case identifier (e.g. ``undefined-name``); tests and docs key on it.
        severity: error, warning or info.
        cell: Index of the cell in the notebook's ``cells`` list (markdown included), if any.
        line: 1-based line inside that cell's source, if known.
        message: One actionable sentence: what is wrong and what to do.
        step: Name of the step concerned, if any.
        names: Variables the diagnostic is about.
    """

    code: str
    severity: Severity
    cell: int | None = None
    line: int | None = None
    message: str
    step: str | None = None
    names: list[str] = Field(default_factory=list)


class ParameterType(str, Enum):
    """Types a pipeline parameter can have (what KFP can carry as a parameter)."""

    int = "int"
    float = "float"
    str = "str"
    bool = "bool"
    list = "list"
    dict = "dict"
    none = "none"


class Parameter(_Model):
    """A pipeline parameter from a ``pipeline-parameters`` / ``parameters`` cell."""

    name: str
    default: Any = None
    type: ParameterType
    cell: int
    line: int | None = None
    source: str = Field(description="The assignment as written, e.g. 'lr = 0.1'.")


class Metric(_Model):
    """A pipeline metric named in the ``pipeline-metrics`` cell."""

    name: str
    cell: int
    line: int | None = None


class DefinitionKind(str, Enum):
    """What a replayed snippet is."""

    imports_cell = "imports-cell"
    functions_cell = "functions-cell"
    import_ = "import"
    function = "function"
    class_ = "class"
    state = "state"
    derived = "derived-value"  # a computed line of a parameters cell, re-run after overrides


class Definition(_Model):
    """Code a step replays before its own cells instead of receiving a pickle.

    Imports, ``def`` and ``class`` statements, Kale's ``imports``/``functions`` cells, and
    global-state settings (``pd.set_option(...)``) are re-executed in the consuming step, so
    their globals are that step's own.

    Attributes:
        cell: Source cell index.
        line: 1-based first line in that cell.
        kind: What the snippet is.
        names: Names it binds (empty for state settings).
        source: Source to execute in the step's IPython kernel (a Kale imports/functions cell
            keeps its IPython syntax, e.g. ``%matplotlib inline``; extracted statements are
            plain Python).
    """

    cell: int
    line: int = 1
    kind: DefinitionKind
    names: list[str] = Field(default_factory=list)
    source: str


class EdgeKind(str, Enum):
    """Why one step must run after another."""

    data = "data"
    prev = "prev"
    state = "state"
    file = "file"


class Edge(_Model):
    """A dependency between two steps, with the variables it carries and a human reason."""

    source: str
    target: str
    kind: EdgeKind = EdgeKind.data
    variables: list[str] = Field(default_factory=list)
    reason: str


class StepSettings(_Model):
    """Per-step execution settings from tags (``image:``, ``limit:``, ``cache:``, ``retry:``)."""

    image: str | None = None
    limits: dict[str, str] = Field(default_factory=dict)
    cache: bool | None = None
    retries: int = 0
    env: dict[str, str] = Field(default_factory=dict)


class Step(_Model):
    """One pipeline step: a contiguous run of notebook cells executed in one fresh kernel.

    Attributes:
        name: KFP-valid name (lowercase letters, digits, ``-``), unique in the pipeline.
        display_name: The name as tagged.
        role: ``step`` for ordinary steps, ``metrics`` for the ``pipeline-metrics`` step.
        cells: Indices of the notebook cells in this step, markdown included, in order.
        inputs: Data variables loaded before the step runs (parameters and definitions
            excluded), sorted.
        input_sources: For each input, the step that last may have changed it.
        outputs: Variables a later step needs from this one, sorted.
        parameters: Pipeline parameters the step reads.
        definitions: Snippets replayed before the step's cells, in notebook order.
        state_inputs: Global-state pseudo-variables (e.g. ``random``, ``numpy.random``) whose
            state the step starts from, with the step that produced it.
        state_outputs: Pseudo-variables whose end state later steps need.
        metrics: For the metrics step, the metric names it reports.
        depends_on: Steps that must finish first (data, prev, state and file edges).
        settings: Tag-derived execution settings.
    """

    name: str
    display_name: str
    role: Literal["step", "metrics"] = "step"
    cells: list[int]
    inputs: list[str] = Field(default_factory=list)
    input_sources: dict[str, str] = Field(default_factory=dict)
    outputs: list[str] = Field(default_factory=list)
    parameters: list[str] = Field(default_factory=list)
    definitions: list[Definition] = Field(default_factory=list)
    state_inputs: dict[str, str] = Field(default_factory=dict)
    state_outputs: list[str] = Field(default_factory=list)
    metrics: list[str] = Field(default_factory=list)
    depends_on: list[str] = Field(default_factory=list)
    settings: StepSettings = Field(default_factory=StepSettings)


class Pipeline(_Model):
    """A notebook analyzed into steps, edges, parameters, metrics and diagnostics.

    Attributes:
        name: KFP-valid pipeline name (from notebook metadata or the file name).
        notebook: Path of the source notebook as given.
        description: Free text (Kale's ``pipeline_description`` if present).
        steps: Steps in notebook order.
        edges: All dependencies, each with a reason.
        parameters: Pipeline parameters in cell order.
        metrics: Pipeline metrics.
        diagnostics: Everything doubtful, sorted by cell.
        image: Default step image (notebook metadata), if any.
        experiment: Default KFP experiment name (notebook metadata), if any.
        kernel_name: Kernel the notebook declares.
    """

    name: str
    notebook: str
    description: str = ""
    steps: list[Step]
    edges: list[Edge] = Field(default_factory=list)
    parameters: list[Parameter] = Field(default_factory=list)
    metrics: list[Metric] = Field(default_factory=list)
    diagnostics: list[Diagnostic] = Field(default_factory=list)
    image: str | None = None
    experiment: str | None = None
    kernel_name: str = "python3"

    def step(self, name: str) -> Step:
        """Return the step called ``name``.

        Raises:
            KeyError: No step has that name.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @property
    def errors(self) -> list[Diagnostic]:
        """Diagnostics of severity error."""
        return [d for d in self.diagnostics if d.severity is Severity.error]


# --------------------------------------------------------------------------------------------
# Runs: what the run store keeps and the REST API / sidebar show.
# --------------------------------------------------------------------------------------------


class RunState(str, Enum):
    """State of a run or of one step in it."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cached = "cached"
    skipped = "skipped"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        """True once nothing more will happen to it."""
        return self not in (RunState.queued, RunState.running)


class StepRun(_Model):
    """One step of one run.

    Attributes:
        step: Step name.
        state: Current state.
        started: Unix time the step's kernel started executing (None until then).
        finished: Unix time it ended.
        attempts: How many times it was tried (retries count).
        log_path: File with the step's live output.
        executed_notebook: The executed step notebook (.ipynb).
        html: The executed notebook exported to HTML, if made.
        outputs: Saved output variables: name → location (directory or URI).
        digests: Saved output variables: name → content digest.
        error: One-line error, if it failed.
        error_cell: Source notebook cell index of the failure, if a user cell failed.
        external_id: The backend's own id for the task (KFP task id), if any.
    """

    step: str
    state: RunState = RunState.queued
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    log_path: str | None = None
    executed_notebook: str | None = None
    html: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)
    digests: dict[str, str] = Field(default_factory=dict)
    error: str | None = None
    error_cell: int | None = None
    external_id: str | None = None


class Run(_Model):
    """One run of a pipeline, local or on KFP.

    Attributes:
        id: Run id (short, unique in the store).
        pipeline: Pipeline name.
        notebook: Absolute path of the source notebook.
        backend: ``local`` or ``kfp``.
        state: Overall state.
        created: Unix time the run was recorded.
        started: Unix time the first step started.
        finished: Unix time the run ended.
        parameters: Parameter values used.
        steps: Per-step records, in pipeline order.
        run_dir: Folder holding the run's logs, notebooks and artifacts (local runs).
        pid: Process id of the runner (local runs), to detect a runner that died.
        external_id: KFP run id, if any.
        url: Link to the run in the KFP UI, if any.
        error: One-line reason for failure, if any.
        sweep_id: The sweep this run is a trial of, if any.
        trial: Its index among the sweep's trials (0-based), if any.
    """

    id: str
    pipeline: str
    notebook: str
    backend: Literal["local", "kfp"] = "local"
    state: RunState = RunState.queued
    created: float
    started: float | None = None
    finished: float | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRun] = Field(default_factory=list)
    run_dir: str | None = None
    pid: int | None = None
    external_id: str | None = None
    url: str | None = None
    error: str | None = None
    sweep_id: str | None = None
    trial: int | None = None


class SweepTrial(_Model):
    """One parameter set of a sweep and the run that computed it.

    Attributes:
        index: Position in the sweep (0-based).
        parameters: The swept parameters' values for this trial.
        run_id: The trial's run in the store (None until it starts).
        state: The run's state (``queued`` until it starts; ``cancelled`` if it never did).
        metrics: The metrics step's reported values, once it ran.
        error: One-line reason for failure, if any.
    """

    index: int
    parameters: dict[str, Any]
    run_id: str | None = None
    state: RunState = RunState.queued
    metrics: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Sweep(_Model):
    """A parameter sweep: one trial run per parameter set, sharing unchanged steps.

    Attributes:
        id: Sweep id (``sw`` + hex; never a prefix of a run id, which is hex only).
        pipeline: Pipeline name.
        notebook: Absolute path of the source notebook.
        state: ``running`` while trials run; then ``succeeded`` (all trials did), ``failed``
            (some did not) or ``cancelled``.
        created: Unix time it was recorded.
        finished: Unix time it ended.
        axes: Swept parameter → the values tried, in the order given.
        parameters: Values of the other parameters (the same in every trial).
        shared_steps: Steps that read no swept parameter (run once for all trials).
        trials: The trials, in order.
        metric: The metric that ranks trials, if any.
        maximize: Whether a larger ``metric`` is better.
        best: Index of the best finished trial by ``metric``, if any.
        error: One-line reason it did not succeed, if any.
    """

    id: str
    pipeline: str
    notebook: str
    state: RunState = RunState.running
    created: float
    finished: float | None = None
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    parameters: dict[str, Any] = Field(default_factory=dict)
    shared_steps: list[str] = Field(default_factory=list)
    trials: list[SweepTrial] = Field(default_factory=list)
    metric: str | None = None
    maximize: bool = True
    best: int | None = None
    error: str | None = None
