"""Cutting notebooks into steps: Kale tag rules, split modes, settings, and bad input."""

from __future__ import annotations

import json

import pytest
from helpers import diags, edges, io, md, nb, run

from jupyter_pipeline.analysis import analyze, analyze_notebook
from jupyter_pipeline.notebook import NotebookError, kfp_name, parse_notebook


def test_untagged_cell_joins_the_step_above():
    p = run(("x = 1", ["step:a"]), "y = x + 1", ("print(y)", ["step:b"]))
    assert io(p) == {"a": ([], ["y"], []), "b": (["y"], [], ["a"])}
    assert p.step("a").cells == [0, 1]
    assert edges(p) == [("a", "b", "data", ["y"])]
    assert diags(p) == []


def test_leading_untagged_cells_form_a_preamble_step():
    p = run("x = 1", "z = 2", ("y = x + z", ["step:a"]))
    assert [s.name for s in p.steps] == ["preamble", "a"]
    assert p.step("preamble").cells == [0, 1]
    assert io(p) == {"preamble": ([], ["x", "z"], []), "a": (["x", "z"], [], ["preamble"])}
    assert edges(p) == [("preamble", "a", "data", ["x", "z"])]


def test_no_step_tags_is_one_main_step():
    p = run(md("# Title"), "x = 1", "y = x", md("done"))
    assert [(s.name, s.cells) for s in p.steps] == [("main", [0, 1, 2, 3])]
    assert io(p) == {"main": ([], [], [])}
    assert p.edges == []
    assert diags(p) == []


def test_reused_step_name_becomes_a_new_step_with_a_warning():
    p = run(("x = 1", ["step:a"]), ("y = x", ["step:b"]), ("z = y", ["step:a"]), "print(z)")
    assert [(s.name, s.display_name, s.cells) for s in p.steps] == [
        ("a", "a", [0]),
        ("b", "b", [1]),
        ("a-2", "a", [2, 3]),
    ]
    assert io(p) == {
        "a": ([], ["x"], []),
        "b": (["x"], ["y"], ["a"]),
        "a-2": (["y"], [], ["b"]),
    }
    assert diags(p) == [("step-name-reused", "warning", 2, None)]
    assert p.diagnostics[0].step == "a-2"


def test_consecutive_cells_with_the_same_step_tag_are_one_step():
    p = run(("x = 1", ["step:a"]), ("y = x", ["step:a"]), ("print(y)", ["step:b"]))
    assert [(s.name, s.cells) for s in p.steps] == [("a", [0, 1]), ("b", [2])]
    assert diags(p) == []


def test_markdown_cells_are_kept_with_the_step_they_introduce():
    p = run(
        md("# Title"),
        ("x = 1", ["step:a"]),
        md("## Train"),
        ("print(x)", ["step:b"]),
        md("the end"),
    )
    assert [(s.name, s.cells) for s in p.steps] == [("a", [0, 1]), ("b", [2, 3, 4])]


def test_split_headings_one_step_per_section_heading_cells_included():
    p = run(
        md("# Report"),
        md("## Load data"),
        "x = 1",
        md("## Train"),
        "y = x * 2",
        md("## Show"),
        "print(y)",
        split="headings",
    )
    assert [(s.name, s.display_name, s.cells) for s in p.steps] == [
        ("load-data", "Load data", [0, 1, 2]),
        ("train", "Train", [3, 4]),
        ("show", "Show", [5, 6]),
    ]
    assert io(p) == {
        "load-data": ([], ["x"], []),
        "train": (["x"], ["y"], ["load-data"]),
        "show": (["y"], [], ["train"]),
    }


def test_split_headings_code_before_first_heading_and_section_without_code():
    p = run(
        "import math", md("# A"), "x = 1", md("# Intro\ntext"), md("# B"), "y = x", split="headings"
    )
    assert [(s.name, s.cells) for s in p.steps] == [
        ("preamble", [0]),
        ("a", [1, 2]),
        ("b", [3, 4, 5]),
    ]
    assert edges(p) == [("a", "b", "data", ["x"])]


def test_split_headings_without_headings_warns_and_makes_one_step():
    p = run("x = 1", "y = x", split="headings")
    assert len(p.steps) == 1 and p.steps[0].cells == [0, 1]
    assert diags(p) == [("no-headings", "warning", None, None)]


def test_split_cells_one_step_per_code_cell_roles_kept():
    p = run(
        ("import math", ["imports"]),
        "x = 1",
        md("note"),
        "y = math.sqrt(x)",
        ("n = 3", ["parameters"]),
        "print(y * n)",
        split="cells",
    )
    assert [(s.name, s.cells) for s in p.steps] == [("c1", [1]), ("c2", [2, 3]), ("c4", [5])]
    assert io(p) == {"c1": ([], ["x"], []), "c2": (["x"], ["y"], ["c1"]), "c4": (["y"], [], ["c2"])}
    assert p.step("c4").parameters == ["n"]
    assert [d.kind.value for d in p.step("c4").definitions] == ["imports-cell"]


def test_split_cells_ignores_step_and_prev_tags():
    p = run(("x = 1", ["step:a"]), ("y = x", ["step:b", "prev:a"]), split="cells")
    assert [s.name for s in p.steps] == ["c0", "c1"]
    assert edges(p) == [("c0", "c1", "data", ["x"])]
    assert [d.code for d in p.diagnostics] == ["prev-ignored"]


def test_kale_block_tag_is_an_alias_of_step_and_names_are_normalized():
    p = run(("x = 1", ["block:load_Data"]), ("y = x", ["block:Train", "prev:load_Data"]))
    assert [(s.name, s.display_name) for s in p.steps] == [
        ("load-data", "load_Data"),
        ("train", "Train"),
    ]
    assert edges(p) == [("load-data", "train", "data", ["x"]), ("load-data", "train", "prev", [])]
    assert p.step("train").depends_on == ["load-data"]


def test_prev_edge_without_data():
    p = run(("x = 1", ["step:a"]), ("y = 2", ["step:b", "prev:a"]), ("z = 3", ["step:c"]))
    assert io(p) == {"a": ([], [], []), "b": ([], [], ["a"]), "c": ([], [], [])}
    assert edges(p) == [("a", "b", "prev", [])]
    assert "prev:a" in p.edges[0].reason


def test_empty_block_tag_means_nothing():
    p = run(("x = 1", ["step:a"]), ("y = x", ["block:"]))
    assert [(s.name, s.cells) for s in p.steps] == [("a", [0, 1])]


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("load_Data", "load-data"),
        ("Train", "train"),
        ("2nd", "s-2nd"),
        ("a__b", "a-b"),
        ("_", "step"),
    ],
)
def test_kfp_name(raw, want):
    assert kfp_name(raw) == want


def test_step_settings_from_tags():
    p = run(
        (
            "x = 1",
            [
                "step:a",
                "limit:memory:4Gi",
                "limit:nvidia.com/gpu:1",
                "image:python:3.11",
                "cache:disabled",
                "retry:2",
                "env:MODE=fast",
            ],
        ),
        ("y = x", ["step:b", "cache:enabled"]),
    )
    a, b = p.step("a").settings, p.step("b").settings
    assert a.limits == {"memory": "4Gi", "nvidia.com/gpu": "1"}
    assert (a.image, a.cache, a.retries, a.env) == ("python:3.11", False, 2, {"MODE": "fast"})
    assert (b.image, b.cache, b.retries) == (None, True, 0)


def test_kale_only_tags_are_reported_as_info_and_tags_on_markdown_ignored():
    p = run(md("# t", ["step:nope"]), ("x = 1", ["step:a", "annotation:foo:bar"]))
    assert [s.name for s in p.steps] == ["a"]
    assert diags(p, include_info=True) == [
        ("tag-on-markdown", "info", 0, None),
        ("unsupported-tag", "info", 1, None),
    ]


def test_notebook_metadata_name_and_description():
    book = nb(("x = 1", ["step:a"]))
    book.metadata["kubeflow_notebook"] = {
        "pipeline_name": "My_Pipeline",
        "pipeline_description": "desc",
        "docker_image": "img:1",
        "experiment": {"name": "exp"},
    }
    p = analyze(book, path="whatever.ipynb")
    assert (p.name, p.description, p.image, p.experiment) == ("my-pipeline", "desc", "img:1", "exp")
    assert analyze(nb("x = 1"), path="dir/Some Notebook.ipynb").name == "some-notebook"


# ----------------------------------------------------------------------------- bad input


def _bad(*cells, match: str, cell: int | None):
    with pytest.raises(NotebookError, match=match) as exc:
        run(*cells)
    assert exc.value.cell == cell
    assert f"t.ipynb: cell {cell}: " in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_two_step_tags_on_one_cell():
    _bad("x = 0", ("x = 1", ["step:a", "step:b"]), match="two step tags", cell=1)


def test_bad_step_and_role_tag_on_one_cell():
    _bad(("import os", ["step:a", "imports"]), match="conflicting tags", cell=0)


def test_bad_two_role_tags_on_one_cell():
    _bad(("import os", ["imports", "skip"]), match="conflicting tags", cell=0)


def test_bad_prev_naming_a_later_step():
    _bad(("x = 1", ["step:a", "prev:b"]), ("y = 1", ["step:b"]), match="later", cell=0)


def test_bad_prev_naming_the_step_itself():
    _bad(("x = 1", ["step:a", "prev:a"]), match="later", cell=0)


def test_bad_prev_naming_an_unknown_step():
    _bad(
        ("x = 1", ["step:a"]), ("y = 1", ["step:b", "prev:zzz"]), match="known steps: a, b", cell=1
    )


@pytest.mark.parametrize("tag", ["limit:memory", "limit::4Gi", "limit:cpu:lots"])
def test_bad_limit_tag(tag):
    _bad(("x = 1", ["step:a", tag]), match="limit:RESOURCE:VALUE", cell=0)


@pytest.mark.parametrize(
    ("tag", "match"),
    [
        ("step:a b", "may only use"),
        ("cache:sometimes", "cache:enabled"),
        ("retry:x", "retry:N"),
        ("image:", "image"),
    ],
)
def test_bad_other_tags(tag, match):
    _bad("y = 0", ("x = 1", [tag]), match=match, cell=1)


def test_bad_real_syntax_error_names_cell_and_line():
    _bad("x = 1", "y = 2\ndef f(:\n    pass", match="line 2: syntax error", cell=1)


def test_syntax_error_in_skipped_cell_is_only_info():
    p = run(("x = 1", ["step:a"]), ("this is = not python", ["skip"]), ("print(x)", ["step:b"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"])}
    assert diags(p, include_info=True) == [("skipped-cell-syntax", "info", 1, 1)]


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "is not valid JSON"),
        (
            json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": [], "metadata": {}}),
            "nbformat 3",
        ),
        (json.dumps({"a": 1}), "not a Jupyter notebook"),
        ("[1, 2]", "not a Jupyter notebook"),
        (
            json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}),
            "no code cells",
        ),
        (None, "no code cells"),
    ],
)
def test_bad_files(tmp_path, text, match):
    if text is None:
        import nbformat

        text = nbformat.writes(nb(md("only prose")))
    path = _write(tmp_path, "bad.ipynb", text)
    before = path.read_bytes()
    with pytest.raises(NotebookError, match=match) as exc:
        analyze_notebook(path)
    assert str(exc.value).startswith(f"{path}: ")
    assert "\n" not in str(exc.value)
    assert path.read_bytes() == before


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(NotebookError, match="no such file"):
        analyze_notebook(tmp_path / "missing.ipynb")
    with pytest.raises(NotebookError, match="is a directory"):
        analyze_notebook(tmp_path)


def test_parse_notebook_spans_roles():
    parsed = parse_notebook(
        nb(
            ("import os", ["imports"]),
            ("def f():\n    return 1", ["functions"]),
            ("lr = 0.1", ["pipeline-parameters"]),
            ("x = f()", ["step:a"]),
            ("print(x)", ["skip"]),
            "y = x",
            ("print(y)", ["pipeline-metrics"]),
        ),
        "t.ipynb",
    )
    assert [(s.name, s.role, s.cells) for s in parsed.spans] == [
        ("imports", "imports", [0]),
        ("functions", "functions", [1]),
        ("parameters", "parameters", [2]),
        ("a", "step", [3, 5]),
        ("skip", "skip", [4]),
        ("metrics", "metrics", [6]),
    ]
