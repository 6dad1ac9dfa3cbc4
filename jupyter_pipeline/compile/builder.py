"""Build the KFP v2 pipeline for an analyzed notebook with kfp's own SDK and compiler.

One lightweight Python component per step. Its function is generated (KFP embeds a
component's function source in the container command, so the source must exist as text);
its body only hands the step's embedded spec — including the generated step notebook — and
its arguments to :func:`jupyter_pipeline.compile.entry.run_component`, which runs the very
same step runtime the local runner uses. The container therefore needs nothing but the
project installed.

Naming inside a component: parameters keep their notebook names; passed variables keep
theirs as artifact names (an input that is also re-output gets a ``_in`` suffix); the
executed notebook is ``executed_notebook`` (Artifact, .ipynb) and ``executed_notebook_html``
(HTML); the metrics step reports ``metrics`` (Metrics); global RNG state travels as
``state_random`` / ``state_numpy_random``.
"""

from __future__ import annotations

import builtins
import inspect
import json
import keyword
import linecache
import os
import sys
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from jupyter_pipeline.compile.artifacts import infer_artifact_kinds
from jupyter_pipeline.compile.config import DEFAULT_IMAGE, KfpConfig, SecretEnv
from jupyter_pipeline.compile.packages import project_requirement, step_requirements
from jupyter_pipeline.model import ParameterType, Pipeline, Step
from jupyter_pipeline.runtime.kernel import STATE_PREFIX, state_key

__all__ = [
    "CompileError",
    "CompiledPackage",
    "StepComponent",
    "apply_settings",
    "build_components",
    "build_pipeline_func",
    "compile_package",
    "display_names",
    "function_names",
    "task_names",
]

_PY_TYPES: dict[ParameterType, str] = {
    ParameterType.int: "int",
    ParameterType.float: "float",
    ParameterType.str: "str",
    ParameterType.bool: "bool",
    ParameterType.list: "list",
    ParameterType.dict: "dict",
    ParameterType.none: "str",
}
# Names a generated function must not use: its body needs `locals`, and the component module
# star-imports kfp.dsl and typing.
_RESERVED = {"locals", "kfp", "dsl", "_jp_args", "run_component"}
_ACCELERATOR_ALIASES = {"gpu": "nvidia.com/gpu", "nvidia-gpu": "nvidia.com/gpu"}


class CompileError(Exception):
    """The pipeline cannot be compiled (bad input the user can fix; exit 2)."""


@dataclass
class StepComponent:
    """How one step maps onto its KFP component (names of its inputs and outputs)."""

    step: str
    function: str
    task: str
    display_name: str
    parameters: dict[str, str] = field(default_factory=dict)  # param → arg
    inputs: dict[str, str] = field(default_factory=dict)  # var → arg
    outputs: dict[str, str] = field(default_factory=dict)  # var → arg
    kinds: dict[str, str] = field(default_factory=dict)  # arg → artifact class
    metrics: str | None = None
    executed_notebook: str = "executed_notebook"
    html: str | None = "executed_notebook_html"
    image: str = DEFAULT_IMAGE
    packages: list[str] | None = None
    producers: dict[str, str] = field(default_factory=dict)  # input var → producing step


@dataclass
class CompiledPackage:
    """A compiled pipeline: the IR documents and their YAML text."""

    pipeline_spec: dict[str, Any]
    platform_spec: dict[str, Any] | None
    yaml: str
    components: dict[str, StepComponent]


# What a broken environment is told (kfp is a dependency of the project, pinned there).
KFP_REQUIREMENTS = "'kfp==2.17.0' 'kfp-kubernetes==2.17.0'"


def kfp_missing(exc: ImportError) -> str:
    """The one-line message for kfp (or a package it needs) missing from this environment."""
    return (
        f"compiling for Kubeflow Pipelines needs kfp, which cannot be imported here ({exc}); "
        f"reinstall jupyter-pipeline, or: pip install {KFP_REQUIREMENTS}"
    )


def _kfp():
    """Import kfp's DSL and compiler lazily, without kfp's client (and Kubernetes') import cost.

    Raises:
        CompileError: kfp, or a package it needs, is not installed (one line, no traceback).
    """
    try:
        return _import_kfp()
    except ImportError as exc:
        raise CompileError(kfp_missing(exc)) from None


def _import_kfp():
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"kfp(\.|$)")
    if "kfp" not in sys.modules:
        # kfp's package __init__ imports kfp.client, and with it the whole Kubernetes client
        # (~1 s), unless _KFP_RUNTIME is set: kfp's own switch for code that needs no client.
        # Only the package __init__ sees it; kfp.dsl is imported below with it unset.
        saved = os.environ.get("_KFP_RUNTIME")
        os.environ["_KFP_RUNTIME"] = "true"
        try:
            import kfp  # noqa: F401
        finally:
            if saved is None:
                del os.environ["_KFP_RUNTIME"]
            else:
                os.environ["_KFP_RUNTIME"] = saved
    from kfp import compiler, dsl

    return dsl, compiler


def _identifier(name: str, taken: set[str], suffix: str = "") -> str:
    """A Python identifier for ``name`` not in ``taken`` (which it is then added to)."""
    base = "".join(c if c.isalnum() or c == "_" else "_" for c in name).lstrip("_") or "var"
    if base[0].isdigit():
        base = "v_" + base
    base += suffix
    if keyword.iskeyword(base) or base in _RESERVED or hasattr(builtins, base):
        base += "_"
    candidate, n = base, 2
    while candidate in taken:
        candidate = f"{base}_{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _state_arg(var: str) -> str:
    return "state_" + var[len(STATE_PREFIX) :].replace(".", "_")


def _image_for(
    step: Step, pipeline: Pipeline, nb_image: str | None, config: KfpConfig, override: str | None
) -> str:
    # The step's image: tag (the cell knows best), then the command line (asked for this
    # compile), then the notebook's default (Kale's docker_image or jupyter_pipeline.kfp.image),
    # then the configured default (config file, JUPYTER_PIPELINE_IMAGE: an image that holds
    # the project) — or, when steps pip-install what they need, a plain Python image.
    if config.packages == "pip":
        fallback = config.base_image or f"python:{sys.version_info.major}.{sys.version_info.minor}"
    else:
        fallback = config.image or DEFAULT_IMAGE
    return step.settings.image or override or pipeline.image or nb_image or fallback


def _apply_limits(task: Any, step: Step) -> None:
    """Emit every ``limit:`` tag: CPU and memory limits/requests and accelerators."""
    for resource, value in sorted(step.settings.limits.items()):
        key = resource.lower()
        try:
            if key in ("cpu", "limits.cpu"):
                task.set_cpu_limit(value)
            elif key in ("memory", "mem", "limits.memory"):
                task.set_memory_limit(value)
            elif key in ("cpu-request", "requests.cpu", "request-cpu"):
                task.set_cpu_request(value)
            elif key in ("memory-request", "requests.memory", "request-memory"):
                task.set_memory_request(value)
            elif key in _ACCELERATOR_ALIASES or "gpu" in key or "tpu" in key or "/" in key:
                task.set_accelerator_type(_ACCELERATOR_ALIASES.get(key, resource))
                task.set_accelerator_limit(value)
            else:
                raise CompileError(
                    f"step {step.name!r}: limit:{resource}:{value} is not a resource KFP can "
                    "set; use cpu, memory, cpu-request, memory-request or an accelerator such "
                    "as nvidia.com/gpu"
                )
        except ValueError as exc:
            raise CompileError(
                f"step {step.name!r}: limit:{resource}:{value} is invalid for KFP ({exc})"
            ) from None


def function_names(pipeline: Pipeline) -> dict[str, str]:
    """Each step's component function name (a Python identifier: ``list_`` for ``list``)."""
    taken: set[str] = set()
    return {step.name: _identifier(step.name, taken) for step in pipeline.steps}


def task_names(pipeline: Pipeline, order: Iterable[str] | None = None) -> dict[str, str]:
    """Each step's KFP task name (its key in the pipeline's DAG), as kfp itself names it.

    kfp names a component after its function (``list_`` → ``List``), a task after its
    component, made Kubernetes-safe (``list``), then unique in the pipeline in the order the
    tasks are added (``-2``, ``-3``…): this applies kfp's own functions in that order, so a
    step named after a Python builtin maps to ``list``, not ``list-``. The KFP runner maps
    task states back onto steps with it.

    Args:
        pipeline: The analyzed pipeline.
        order: The order the tasks are added, when not the steps' (a sweep adds its shared
            steps first).
    """
    _kfp()
    from kfp.dsl import utils
    from kfp.dsl.component_factory import _python_function_name_to_component_name

    functions = function_names(pipeline)
    taken: list[str] = []
    out: dict[str, str] = {}
    for step in order if order is not None else functions:
        component = _python_function_name_to_component_name(functions[step])
        task = utils.make_name_unique_by_adding_index(
            utils.maybe_rename_for_k8s(component), taken, "-"
        )
        taken.append(task)
        out[step] = task
    return out


def display_names(pipeline: Pipeline) -> dict[str, str]:
    """Display names as tagged, made unique (a reused tag name shows as the step's name)."""
    seen: set[str] = set()
    out = {}
    for step in pipeline.steps:
        display = step.display_name or step.name
        if display in seen:
            display = step.name
        seen.add(display)
        out[step.name] = display
    return out


def _plan_components(
    pipeline: Pipeline,
    nb: NotebookNode,
    config: KfpConfig,
    image_override: str | None,
    nb_image: str | None,
    html: bool,
) -> dict[str, StepComponent]:
    kinds = infer_artifact_kinds(pipeline, nb)
    displays = display_names(pipeline)
    functions = function_names(pipeline)
    tasks = task_names(pipeline)
    plans: dict[str, StepComponent] = {}
    for step in pipeline.steps:
        taken: set[str] = set()
        plan = StepComponent(
            step=step.name,
            function=functions[step.name],
            task=tasks[step.name],  # kfp's name; build_pipeline_func records the one it gave
            display_name=displays[step.name],
            image=_image_for(step, pipeline, nb_image, config, image_override),
        )
        # The fixed artifact names first, so they are the same in every component.
        plan.executed_notebook = _identifier("executed_notebook", taken)
        plan.html = _identifier("executed_notebook_html", taken) if html else None
        if step.role == "metrics":
            plan.metrics = _identifier("metrics", taken)
        for p in step.parameters:
            plan.parameters[p] = _identifier(p, taken)
        outs = [*step.outputs, *map(state_key, step.state_outputs)]
        ins = [*step.inputs, *map(state_key, step.state_inputs)]
        # Outputs keep the variable's name (downstream tasks and the UI show it).
        for var in outs:
            arg = _state_arg(var) if var.startswith(STATE_PREFIX) else var
            plan.outputs[var] = _identifier(arg, taken)
            plan.kinds[plan.outputs[var]] = kinds.get((step.name, var), "Artifact")
        for var in ins:
            arg = _state_arg(var) if var.startswith(STATE_PREFIX) else var
            plan.inputs[var] = _identifier(arg, taken, "_in" if var in step.outputs else "")
            producer = (
                step.state_inputs.get(var[len(STATE_PREFIX) :])
                if var.startswith(STATE_PREFIX)
                else step.input_sources.get(var)
            )
            if producer is None:
                raise CompileError(
                    f"step {step.name!r} reads {var!r} but the analysis names no step that "
                    "produces it; fix the diagnostics reported by `jupyter-pipeline analyze`"
                )
            plan.producers[var] = producer
            plan.kinds[plan.inputs[var]] = kinds.get((producer, var), "Artifact")
        if config.packages == "pip":
            plan.packages = [
                config.project_requirement or project_requirement(),
                *step_requirements(pipeline, nb, step),
            ]
        plans[step.name] = plan
    return plans


def _function_source(
    plan: StepComponent, step: Step, pipeline: Pipeline, spec: dict[str, Any]
) -> str:
    params: list[str] = []
    for p, arg in plan.parameters.items():
        ptype = next((x.type for x in pipeline.parameters if x.name == p), ParameterType.str)
        params.append(f"{arg}: {_PY_TYPES[ptype]}")
    params += [f"{arg}: Input[{plan.kinds[arg]}]" for arg in plan.inputs.values()]
    params += [f"{arg}: Output[{plan.kinds[arg]}]" for arg in plan.outputs.values()]
    if plan.metrics:
        params.append(f"{plan.metrics}: Output[Metrics]")
    params.append(f"{plan.executed_notebook}: Output[Artifact]")
    if plan.html:
        params.append(f"{plan.html}: Output[HTML]")
    cells = ", ".join(str(c) for c in step.cells)
    doc = (
        f"Step {plan.display_name!r} of {Path(pipeline.notebook).name} (cells {cells}), run by "
        "jupyter-pipeline's step runtime in a fresh kernel."
    )
    return (
        f"def {plan.function}(\n"
        + "".join(f"    {p},\n" for p in params)
        + "):\n"
        + f"    {json.dumps(doc)}\n"
        + "    _jp_args = locals().copy()\n"
        + "    from jupyter_pipeline.compile.entry import run_component\n\n"
        # A Python literal (keys sorted) reads better in the YAML than escaped JSON.
        + f"    run_component({json.loads(json.dumps(spec, sort_keys=True))!r}, _jp_args)\n"
    )


def _component_spec(
    plan: StepComponent,
    step: Step,
    pipeline: Pipeline,
    nb: NotebookNode,
    workdir: str | None,
) -> dict[str, Any]:
    from jupyter_pipeline.runtime import build_step_notebook

    step_nb = json.loads(json.dumps(build_step_notebook(nb, pipeline, step.name)))
    # Only the file name: the compiled YAML must not depend on where it was compiled.
    step_nb.get("metadata", {}).get("jupyter_pipeline", {})["source_notebook"] = Path(
        pipeline.notebook
    ).name
    return {
        "step": step.name,
        "display_name": plan.display_name,
        "source_notebook": Path(pipeline.notebook).name,
        "notebook": step_nb,
        "producers": plan.producers,
        "parameters": plan.parameters,
        "inputs": plan.inputs,
        "outputs": plan.outputs,
        "metrics": plan.metrics,
        "executed_notebook": plan.executed_notebook,
        "html": plan.html,
        "kernel_name": "python3",
        "workdir": workdir,
    }


def _make_component(plan: StepComponent, source: str, dsl: Any) -> Any:
    filename = f"<jupyter-pipeline component {plan.function}>"
    # kfp reads the function's source through inspect (linecache) to embed it.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace: dict[str, Any] = {}
    exec("from kfp.dsl import *\nfrom typing import *\n", namespace)
    # dont_inherit: this module's `from __future__ import annotations` would turn the
    # annotations into strings, which kfp reads as artifact type names.
    exec(compile(source, filename, "exec", dont_inherit=True), namespace)
    func = namespace[plan.function]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dsl.component(
            func,
            base_image=plan.image,
            packages_to_install=plan.packages,
            # An image that holds the project holds kfp too; pip mode lets kfp install itself.
            install_kfp_package=plan.packages is not None,
        )


def _pipeline_signature(pipeline: Pipeline) -> inspect.Signature:
    params = []
    for p in pipeline.parameters:
        annotation = getattr(builtins, _PY_TYPES[p.type])
        params.append(
            inspect.Parameter(
                p.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=p.default,
                annotation=annotation,
            )
        )
    return inspect.Signature(params)


def build_components(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    *,
    image: str | None = None,
    packages_mode: str | None = None,
    config: KfpConfig | None = None,
    env: dict[str, str] | None = None,
    secrets: list[SecretEnv] | None = None,
    html: bool | None = None,
    workdir: str | None = None,
) -> tuple[KfpConfig, dict[str, StepComponent], dict[str, Any]]:
    """Each step's KFP component and its plan; options as for :func:`build_pipeline_func`.

    Returns:
        The effective config, each step's plan and each step's component, by step name.

    Raises:
        CompileError: Error diagnostics, or settings KFP cannot express.
    """
    if pipeline.errors:
        first = pipeline.errors[0]
        where = f"cell {first.cell}: " if first.cell is not None else ""
        raise CompileError(
            f"{pipeline.notebook}: {where}{first.message} "
            f"({len(pipeline.errors)} error(s); fix them before compiling)"
        )
    nb = _read(source_nb)
    config = config or KfpConfig()
    nb_kfp = ((nb.get("metadata") or {}).get("jupyter_pipeline") or {}).get("kfp") or {}
    config = config.merged(
        packages=packages_mode,
        env=env,
        secrets=[s.model_dump() for s in secrets] if secrets else None,
        html=html,
    )
    dsl, _ = _kfp()
    plans = _plan_components(pipeline, nb, config, image, nb_kfp.get("image"), config.html)
    components = {}
    for step in pipeline.steps:
        plan = plans[step.name]
        spec = _component_spec(plan, step, pipeline, nb, workdir)
        components[step.name] = _make_component(
            plan, _function_source(plan, step, pipeline, spec), dsl
        )
    return config, plans, components


def build_pipeline_func(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    *,
    image: str | None = None,
    packages_mode: str | None = None,
    config: KfpConfig | None = None,
    env: dict[str, str] | None = None,
    secrets: list[SecretEnv] | None = None,
    html: bool | None = None,
    workdir: str | None = None,
) -> tuple[Any, dict[str, StepComponent]]:
    """Build the KFP pipeline function (a ``GraphComponent``) for an analyzed notebook.

    Call the result under ``kfp.local`` to run it on this machine, or compile it.

    Args:
        pipeline: The analyzed pipeline (error diagnostics stop compilation).
        source_nb: The notebook it came from (node or path).
        image: Command-line image: below a step's ``image:`` tag, above the notebook's default.
        packages_mode: ``"image"`` (default: the image already holds the project and the
            packages) or ``"pip"`` (each step pip-installs the project plus only what its
            own imports need, on ``config.base_image``).
        config: KFP settings (default image, env, secrets…); see :mod:`.config`.
        env: Extra environment variables for every step.
        secrets: Extra Kubernetes secrets exposed to every step as env vars.
        html: Export each executed step notebook to HTML (default: ``config.html``).
        workdir: Working directory of the steps' kernels inside the container (default: the
            container's own working directory).

    Returns:
        The pipeline function and each step's component plan.

    Raises:
        CompileError: Error diagnostics, or settings KFP cannot express.
    """
    config, plans, components = build_components(
        pipeline,
        source_nb,
        image=image,
        packages_mode=packages_mode,
        config=config,
        env=env,
        secrets=secrets,
        html=html,
        workdir=workdir,
    )
    dsl, _ = _kfp()

    signature = _pipeline_signature(pipeline)
    names = [p.name for p in pipeline.parameters]

    def body(*args: Any) -> None:
        values = dict(zip(names, args, strict=True))
        tasks: dict[str, Any] = {}
        for step in pipeline.steps:
            plan = plans[step.name]
            kwargs: dict[str, Any] = {arg: values[p] for p, arg in plan.parameters.items()}
            for var, arg in plan.inputs.items():
                producer = plan.producers[var]
                kwargs[arg] = tasks[producer].outputs[plans[producer].outputs[var]]
            task = components[step.name](**kwargs)
            plan.task = task.name  # the task's key in the DAG, as kfp named it
            task.set_display_name(plan.display_name)
            # Data edges are implied by the artifacts; the other edges (prev:, state, files)
            # are explicit. Nothing else orders tasks, so parallel branches stay parallel.
            for dep in step.depends_on:
                task.after(tasks[dep])
            apply_settings(task, step, config)
            tasks[step.name] = task

    body.__signature__ = signature  # type: ignore[attr-defined]
    body.__name__ = pipeline.name.replace("-", "_")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        func = dsl.pipeline(
            name=pipeline.name,
            description=pipeline.description or f"Pipeline of {Path(pipeline.notebook).name}",
        )(body)
    return func, plans


def apply_settings(task: Any, step: Step, config: KfpConfig) -> None:
    """Apply a step's tag settings (limits, caching, retries, env, secrets) to its task."""
    settings = step.settings
    _apply_limits(task, step)
    if settings.cache is not None:
        task.set_caching_options(settings.cache)
    if settings.retries:
        task.set_retry(num_retries=settings.retries)
    for name, value in sorted({**config.env, **settings.env}.items()):
        task.set_env_variable(name, value)
    if config.secrets:
        try:
            from kfp import kubernetes
        except ImportError as exc:
            raise CompileError(kfp_missing(exc)) from None

        for secret in config.secrets:
            kubernetes.use_secret_as_env(
                task,
                secret_name=secret.name,
                secret_key_to_env={key: env for env, key in sorted(secret.env.items())},
            )


def _read(source_nb: NotebookNode | str | Path) -> NotebookNode:
    if isinstance(source_nb, str | Path):
        from jupyter_pipeline.notebook import read_notebook

        return read_notebook(source_nb)
    return source_nb


def compile_package(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    **options: Any,
) -> CompiledPackage:
    """Compile to KFP's IR with kfp's own compiler; see :func:`build_pipeline_func` for options.

    Returns:
        The pipeline spec, the platform spec (Kubernetes secrets) if any, and the YAML text.
    """
    _kfp()  # a missing kfp is reported before the notebook's own errors
    func, plans = build_pipeline_func(pipeline, source_nb, **options)
    return _compile_func(func, plans)


def _compile_func(func: Any, plans: dict[str, StepComponent]) -> CompiledPackage:
    """Compile a built pipeline function (plain or sweep) into its :class:`CompiledPackage`."""
    _, compiler = _kfp()
    from google.protobuf import json_format  # kfp's own dependency: importable after kfp

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pipeline.yaml"
        compiler.Compiler().compile(func, str(path))
        text = path.read_text(encoding="utf-8")
    # The same dicts kfp's compiler dumped (re-parsing its YAML would cost seconds).
    platform = func.platform_spec
    return CompiledPackage(
        pipeline_spec=json_format.MessageToDict(func.pipeline_spec),
        platform_spec=json_format.MessageToDict(platform) if platform.platforms else None,
        yaml=text,
        components=plans,
    )
