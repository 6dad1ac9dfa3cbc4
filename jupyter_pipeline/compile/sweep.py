"""A sweep as one KFP pipeline: the shared steps once, then a ``ParallelFor`` over the trials.

The same split as the local sweep (:func:`jupyter_pipeline.runners.sweep.plan_sweep`): steps
that read no swept parameter, directly or through their inputs, are tasks outside the loop
and run once; the rest are tasks inside ``dsl.ParallelFor(items=<the trials>)``, reading the
swept values from the loop item and the shared tasks' artifacts from outside the loop. So the
cluster shares the same work the local runner does. The swept parameters are not pipeline
parameters (``sweep_trials``, a list of dicts defaulting to the planned trials, is); every other
parameter still is, with the sweep's fixed values (``-p``) as defaults.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from jupyter_pipeline.compile.builder import (
    CompiledPackage,
    CompileError,
    StepComponent,
    _compile_func,
    _kfp,
    _pipeline_signature,
    apply_settings,
    build_components,
)
from jupyter_pipeline.model import Parameter, ParameterType, Pipeline
from jupyter_pipeline.runners.sweep import SweepPlan

__all__ = ["TRIALS", "build_sweep_pipeline_func", "compile_sweep_package"]

TRIALS = "sweep_trials"  # the pipeline parameter holding the trials' parameter sets


def build_sweep_pipeline_func(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    plan: SweepPlan,
    *,
    parallelism: int | None = None,
    **options: Any,
) -> tuple[Any, dict[str, StepComponent]]:
    """Build the sweep's KFP pipeline function.

    Args:
        pipeline: The analyzed pipeline.
        source_nb: The notebook it came from.
        plan: The sweep (:func:`~jupyter_pipeline.runners.sweep.plan_sweep`).
        parallelism: Trials running at once on the cluster (default: all).
        **options: As for :func:`~jupyter_pipeline.compile.build_pipeline_func`.

    Returns:
        The pipeline function and each step's component plan.

    Raises:
        CompileError: As for a plain compile.
    """
    config, plans, components = build_components(pipeline, source_nb, **options)
    dsl, _ = _kfp()
    if any(p.name == TRIALS for p in pipeline.parameters):
        raise CompileError(
            f"{pipeline.notebook}: a parameter is named {TRIALS}, the name of the sweep's "
            "list of trials; rename it to compile a sweep"
        )
    fixed = [
        p.model_copy(update={"default": plan.base[p.name]})
        for p in pipeline.parameters
        if p.name not in plan.axes
    ]
    trials = Parameter(name=TRIALS, default=plan.trials, type=ParameterType.list, cell=0, source="")
    signature = _pipeline_signature(pipeline.model_copy(update={"parameters": [*fixed, trials]}))
    names = [p.name for p in fixed] + [TRIALS]
    dependent = set(plan.dependent)
    name = f"{pipeline.name}-sweep"

    def body(*args: Any) -> None:
        values: dict[str, Any] = dict(zip(names, args, strict=True))
        tasks: dict[str, Any] = {}

        def add(step_name: str, params: dict[str, Any]) -> None:
            step = pipeline.step(step_name)
            plan_ = plans[step_name]
            kwargs: dict[str, Any] = {arg: params[p] for p, arg in plan_.parameters.items()}
            for var, arg in plan_.inputs.items():
                producer = plan_.producers[var]
                kwargs[arg] = tasks[producer].outputs[plans[producer].outputs[var]]
            task = components[step_name](**kwargs)
            plan_.task = task.name
            task.set_display_name(plan_.display_name)
            for dep in step.depends_on:
                task.after(tasks[dep])
            apply_settings(task, step, config)
            tasks[step_name] = task

        for step in pipeline.steps:
            if step.name not in dependent:
                add(step.name, values)
        # Over a pipeline parameter (not a literal list): kfp then leaves the fields' types
        # open (a literal list of dicts gets all fields typed as its first value), and the
        # trials can be changed when the run is submitted.
        with dsl.ParallelFor(items=values[TRIALS], parallelism=parallelism or 0) as trial:
            swept = {axis: getattr(trial, axis) for axis in plan.axes}
            for step in pipeline.steps:
                if step.name in dependent:
                    add(step.name, {**values, **swept})

    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__name__ = name.replace("-", "_")
    axes = ", ".join(f"{k} in {v!r}" for k, v in plan.axes.items())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        func = dsl.pipeline(
            name=name,
            description=f"Sweep of {Path(pipeline.notebook).name} over {axes}: "
            f"{len(plan.trials)} trials sharing {', '.join(plan.shared) or 'no steps'}",
        )(body)
    return func, plans


def compile_sweep_package(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    plan: SweepPlan,
    *,
    parallelism: int | None = None,
    **options: Any,
) -> CompiledPackage:
    """Compile the sweep with kfp's compiler; see :func:`build_sweep_pipeline_func`."""
    func, plans = build_sweep_pipeline_func(
        pipeline, source_nb, plan, parallelism=parallelism, **options
    )
    return _compile_func(func, plans)
