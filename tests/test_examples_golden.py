"""Golden analysis of the example notebooks, plus the facts each example exists to show.

``pytest --update-golden`` rewrites ``tests/golden/analyze/<name>.json`` from the current
analysis; review the diff before committing it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

from jupyter_pipeline.analysis import analyze_notebook
from jupyter_pipeline.model import Pipeline, Severity

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "notebooks"
GOLDEN = Path(__file__).resolve().parent / "golden" / "analyze"
NAMES = ["iris_classifier", "wine_branches", "diabetes_parameters_metrics"]


def analyzed(name: str) -> Pipeline:
    return analyze_notebook(EXAMPLES / f"{name}.ipynb")


def golden_json(pipeline: Pipeline, name: str) -> str:
    data = pipeline.model_dump(mode="json")
    # The path as given depends on where pytest runs; store it relative to the project.
    data["notebook"] = f"examples/notebooks/{name}.ipynb"
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def ancestors(pipeline: Pipeline, name: str) -> set[str]:
    out: set[str] = set()
    todo = list(pipeline.step(name).depends_on)
    while todo:
        dep = todo.pop()
        if dep not in out:
            out.add(dep)
            todo.extend(pipeline.step(dep).depends_on)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_analysis_matches_golden(name: str, update_golden: bool) -> None:
    got = golden_json(analyzed(name), name)
    path = GOLDEN / f"{name}.json"
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"no golden file {path}; run pytest --update-golden"
    assert got == path.read_text(encoding="utf-8"), (
        f"analysis of {name} changed; if intended, run pytest --update-golden and review the diff"
    )


@pytest.mark.parametrize("name", NAMES)
def test_examples_are_clean_and_have_metrics(name: str) -> None:
    p = analyzed(name)
    assert [d for d in p.diagnostics if d.severity is not Severity.info] == []
    metrics_steps = [s for s in p.steps if s.role == "metrics"]
    assert [s.name for s in metrics_steps] == ["pipeline-metrics"]
    assert metrics_steps[0].metrics == [m.name for m in p.metrics]
    assert set(metrics_steps[0].inputs) == set(metrics_steps[0].metrics)


def test_iris_is_a_straight_chain() -> None:
    p = analyzed("iris_classifier")
    assert [s.name for s in p.steps] == [
        "load-data",
        "split",
        "train",
        "evaluate",
        "pipeline-metrics",
    ]
    assert p.step("split").input_sources == {"df": "load-data", "iris": "load-data"}
    assert p.step("train").input_sources == {"X_train": "split", "y_train": "split"}
    assert p.step("evaluate").input_sources["model"] == "train"
    assert {x.name: x.type.value for x in p.parameters} == {
        "test_size": "float",
        "C": "float",
        "max_iter": "int",
        "random_state": "int",
    }
    assert p.step("train").parameters == ["C", "max_iter"]
    assert [m.name for m in p.metrics] == ["accuracy"]


def test_wine_branches_are_parallel_and_join() -> None:
    p = analyzed("wine_branches")
    forest, logistic = p.step("random-forest"), p.step("logistic-regression")
    assert forest.depends_on == ["prepare"]
    assert logistic.depends_on == ["prepare"]
    # Real parallelism: neither branch waits for the other, directly or transitively.
    assert "logistic-regression" not in ancestors(p, "random-forest")
    assert "random-forest" not in ancestors(p, "logistic-regression")
    assert set(forest.input_sources.values()) == {"prepare"}
    assert set(logistic.input_sources.values()) == {"prepare"}
    compare = p.step("compare")
    assert set(compare.depends_on) == {"random-forest", "logistic-regression"}
    assert compare.input_sources == {
        "forest_scores": "random-forest",
        "logistic_scores": "logistic-regression",
    }
    assert [m.name for m in p.metrics] == ["forest_accuracy", "logistic_accuracy"]


def test_diabetes_parameters_state_and_in_place_change() -> None:
    p = analyzed("diabetes_parameters_metrics")
    assert {x.name: (x.type.value, x.default) for x in p.parameters} == {
        "seed": ("int", 7),
        "n_bootstrap": ("int", 200),
        "alpha": ("float", 0.5),
        "model_kind": ("str", "ridge"),
        "standardize": ("bool", True),
        "features": ("list", ["age", "bmi", "bp", "s1", "s5"]),
    }
    # df is created in load-data but changed in place (a new column) in add-features:
    # split must take the changed one.
    assert p.step("add-features").input_sources == {"df": "load-data"}
    assert p.step("split").input_sources["df"] == "add-features"
    assert "df" in p.step("add-features").outputs
    # The seeded global numpy RNG travels as state up to the bootstrap in evaluate.
    assert "numpy.random" in p.step("load-data").state_outputs
    assert "numpy.random" in p.step("evaluate").state_inputs
    assert p.step("evaluate").parameters == ["n_bootstrap"]
    assert [m.name for m in p.metrics] == ["r2", "mae", "r2_spread"]


def test_committed_examples_match_their_generator() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_examples", ROOT / "examples" / "make_examples.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert sorted(gen.EXAMPLES) == sorted(NAMES)
    for name, cells in gen.EXAMPLES.items():
        committed = nbformat.read(EXAMPLES / f"{name}.ipynb", as_version=4)
        assert committed == gen.notebook(name, cells), f"re-run examples/make_examples.py ({name})"
        # Committed without outputs: the examples are inputs, not results.
        assert all(
            not c.get("outputs") and c.get("execution_count") is None
            for c in committed.cells
            if c.cell_type == "code"
        )
