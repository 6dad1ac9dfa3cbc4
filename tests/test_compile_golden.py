"""Golden tests: every example notebook compiles to the checked-in YAML, which loads back with kfp.

Notebooks: ``examples/notebooks/*.ipynb`` and the compiler's own ``tests/data/compile/*.ipynb``.
Golden files: ``tests/golden/compile/<notebook name>.yaml``; ``pytest --update-golden``
rewrites them (review the diff, then commit). The YAML embeds each step notebook, so a change
in the step runtime's generated notebook changes the golden files too.

Compilation uses an empty :class:`KfpConfig` so neither the user's config file nor the
environment can change the output.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path

import pytest
import yaml

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.compile import KfpConfig, compile_package
from jupyter_pipeline.compile.artifacts import infer_artifact_kinds
from jupyter_pipeline.compile.config import DEFAULT_IMAGE
from jupyter_pipeline.notebook import read_notebook

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "compile"
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb")) + sorted(
    (ROOT / "tests" / "data" / "compile").glob("*.ipynb")
)
_PARAM_TYPES = {
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "str": "STRING",
    "bool": "BOOLEAN",
    "list": "LIST",
    "dict": "STRUCT",
    "none": "STRING",
}


def test_there_are_notebooks_to_compile():
    assert len(NOTEBOOKS) >= 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_compiled_yaml_matches_golden_and_loads_back(path, request):
    pipeline = analyze_notebook(path)
    nb = read_notebook(path)
    package = compile_package(pipeline, nb, config=KfpConfig())
    golden = GOLDEN / f"{path.stem}.yaml"
    if request.config.getoption("--update-golden"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(package.yaml, encoding="utf-8")
    assert golden.exists(), f"no golden file {golden}; run pytest --update-golden"
    expected = golden.read_text(encoding="utf-8")
    if package.yaml != expected:
        diff = "".join(
            list(
                difflib.unified_diff(
                    expected.splitlines(True), package.yaml.splitlines(True), "golden", "now"
                )
            )[:40]
        )
        pytest.fail(f"{path.name} compiles differently from {golden.name}:\n{diff}")

    # Load it back with kfp: the pipeline's interface is the notebook's parameters.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from kfp import components

        loaded = components.load_component_from_file(str(golden))
    inputs = loaded.component_spec.inputs or {}
    assert set(inputs) == {p.name for p in pipeline.parameters}
    for p in pipeline.parameters:
        assert inputs[p.name].default == p.default, p.name

    spec = next(yaml.safe_load_all(expected))
    _check_spec(spec, pipeline, nb)


def _check_spec(spec, pipeline, nb):
    """The IR holds every step with its artifacts, parameters, resources, caching, retries."""
    assert spec["pipelineInfo"]["name"] == pipeline.name
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    assert {k: v["parameterType"] for k, v in params.items()} == {
        p.name: _PARAM_TYPES[p.type.value] for p in pipeline.parameters
    }
    kinds = infer_artifact_kinds(pipeline, nb)
    tasks = spec["root"]["dag"]["tasks"]
    assert len(tasks) == len(pipeline.steps)
    by_display = {t["taskInfo"]["name"]: (name, t) for name, t in tasks.items()}
    for step in pipeline.steps:
        _, task = by_display.get(step.display_name) or by_display[step.name]
        component = spec["components"][task["componentRef"]["name"]]
        container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        outputs = component["outputDefinitions"]["artifacts"]
        assert outputs["executed_notebook"]["artifactType"]["schemaTitle"] == "system.Artifact"
        assert outputs["executed_notebook_html"]["artifactType"]["schemaTitle"] == "system.HTML"
        for var in step.outputs:
            assert (
                outputs[var]["artifactType"]["schemaTitle"] == f"system.{kinds[(step.name, var)]}"
            )
        if step.role == "metrics":
            assert outputs["metrics"]["artifactType"]["schemaTitle"] == "system.Metrics"
        declared = component.get("inputDefinitions", {})
        assert set(declared.get("parameters", {})) == set(step.parameters)
        in_arts = declared.get("artifacts", {})
        assert len(in_arts) == len(step.inputs) + len(step.state_inputs)
        # Dependencies come only from the analysis (data and other edges).
        deps = set(task.get("dependentTasks", []))
        assert {by_step(tasks, d) for d in step.depends_on} == deps
        # Settings from tags.
        assert container["image"] == (step.settings.image or pipeline.image or DEFAULT_IMAGE)
        resources = container.get("resources", {})
        for resource, value in step.settings.limits.items():
            if resource == "cpu":
                assert resources["resourceCpuLimit"] == value
            elif resource == "memory":
                assert resources["resourceMemoryLimit"] == value
            elif "gpu" in resource:
                assert resources["accelerator"]["resourceType"] == (
                    resource if "/" in resource else "nvidia.com/gpu"
                )
                assert resources["accelerator"]["resourceCount"] == value
        if not step.settings.limits:
            assert resources == {}
        if step.settings.cache is not None:
            assert task["cachingOptions"].get("enableCache", False) is step.settings.cache
        if step.settings.retries:
            assert task["retryPolicy"]["maxRetryCount"] == step.settings.retries
        else:
            assert "retryPolicy" not in task


def by_step(tasks, step_name):
    """Task key of a step (tasks are keyed by kfp's sanitized function name)."""
    for name, task in tasks.items():
        if name == step_name or task["taskInfo"]["name"] == step_name:
            return name
    raise KeyError(step_name)
