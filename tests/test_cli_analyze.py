"""``jupyter-pipeline analyze``: exit codes, --json shape, --dot/--mermaid, bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from helpers import md, nb

from jupyter_pipeline.cli import main


def _save(tmp_path: Path, name: str, *cells) -> Path:
    path = tmp_path / name
    nbformat.write(nb(*cells), str(path))
    return path


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A clean notebook with parameters, a data edge, a prev edge and a warning."""
    return _save(
        tmp_path,
        "good.ipynb",
        md("# Demo"),
        ("lr = 0.1", ["pipeline-parameters"]),
        ("x = [1, 2]\nu = 0", ["step:load_Data"]),
        ("x.append(3)", ["step:change", "prev:load_Data"]),
        ("import random\nif random.random() > 2:\n    z = 1", ["step:maybe"]),
        ("print(sum(x) * lr, z)", ["step:report"]),
    )


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_shape_and_content(good: Path, capsys):
    before = good.read_bytes()
    code, out, err = _run(capsys, "analyze", str(good), "--json")
    assert code == 0, err
    data = json.loads(out)
    for step in data["steps"]:
        assert {"name", "cells", "inputs", "outputs", "depends_on"} <= set(step)
    for edge in data["edges"]:
        assert {"source", "target", "variables", "reason"} <= set(edge)
        assert edge["reason"]
    for param in data["parameters"]:
        assert {"name", "default", "type"} <= set(param)
    for diag in data["diagnostics"]:
        assert {"code", "severity", "cell", "line", "message"} <= set(diag)
    steps = {
        s["name"]: (s["cells"], s["inputs"], s["outputs"], s["depends_on"]) for s in data["steps"]
    }
    assert steps == {
        "load-data": ([2], [], ["x"], []),
        "change": ([3], ["x"], ["x"], ["load-data"]),
        "maybe": ([4], [], ["z"], []),
        "report": ([5], ["x", "z"], [], ["change", "maybe"]),
    }
    assert [(e["source"], e["target"], e["kind"], e["variables"]) for e in data["edges"]] == [
        ("load-data", "change", "data", ["x"]),
        ("load-data", "change", "prev", []),
        ("change", "report", "data", ["x"]),
        ("maybe", "report", "data", ["z"]),
    ]
    assert data["parameters"] == [
        {"name": "lr", "default": 0.1, "type": "float", "cell": 1, "line": 1, "source": "lr = 0.1"}
    ]
    assert [(d["code"], d["severity"], d["cell"], d["line"]) for d in data["diagnostics"]] == [
        ("conditional-definition", "warning", 5, 1)
    ]
    assert good.read_bytes() == before


def test_readable_report_exit_0_with_warnings(good: Path, capsys):
    code, out, _ = _run(capsys, "analyze", str(good))
    assert code == 0
    assert "load-data" in out and "change" in out and "report" in out
    assert "conditional-definition" in out
    assert "4 steps, 4 edges, 0 errors, 1 warnings" in out


def test_error_diagnostics_exit_1(tmp_path: Path, capsys):
    path = _save(tmp_path, "typo.ipynb", ("value = 1", ["step:a"]), ("print(valeu)", ["step:b"]))
    code, out, _ = _run(capsys, "analyze", str(path))
    assert code == 1
    assert "undefined-name" in out and "valeu" in out
    code, out, _ = _run(capsys, "analyze", str(path), "--json")
    assert code == 1
    assert [d["code"] for d in json.loads(out)["diagnostics"]] == ["undefined-name"]


def test_dot_is_well_formed(good: Path, capsys):
    code, out, _ = _run(capsys, "analyze", str(good), "--dot")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == 'digraph "good" {' and lines[-1] == "}"
    assert out.count("{") == out.count("}") == 1
    nodes = re.findall(r'^  "([^"]+)" \[label=', out, re.M)
    assert nodes == ["load-data", "change", "maybe", "report"]
    arrows = re.findall(r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]*)"', out, re.M)
    assert arrows == [
        ("load-data", "change", "x"),
        ("load-data", "change", "prev"),
        ("change", "report", "x"),
        ("maybe", "report", "z"),
    ]
    dot = shutil.which("dot")
    if dot:  # Graphviz itself, when present, must accept it
        subprocess.run([dot, "-Tsvg"], input=out.encode(), check=True, capture_output=True)


def test_mermaid_is_well_formed(good: Path, capsys):
    code, out, _ = _run(capsys, "analyze", str(good), "--mermaid")
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "flowchart TD"
    nodes = dict(re.findall(r'^  (s\d+)\["([^"]*)"\]$', out, re.M))
    assert nodes == {"s0": "load_Data", "s1": "change", "s2": "maybe", "s3": "report"}
    arrows = re.findall(r'^  (s\d+) (-->|-\.->)\|"([^"]*)"\| (s\d+)$', out, re.M)
    assert arrows == [
        ("s0", "-->", "x", "s1"),
        ("s0", "-.->", "prev", "s1"),
        ("s1", "-->", "x", "s3"),
        ("s2", "-->", "z", "s3"),
    ]
    assert len(lines) == 1 + len(nodes) + len(arrows)


def test_split_option(tmp_path: Path, capsys):
    path = _save(tmp_path, "plain.ipynb", "x = 1", "y = x + 1", "print(y)")
    code, out, _ = _run(capsys, "analyze", str(path), "--json", "--split", "cells")
    assert code == 0
    data = json.loads(out)
    assert [(s["name"], s["inputs"]) for s in data["steps"]] == [
        ("c0", []),
        ("c1", ["x"]),
        ("c2", ["y"]),
    ]
    code, out, _ = _run(capsys, "analyze", str(path), "--json")
    assert [s["name"] for s in json.loads(out)["steps"]] == ["main"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{oops", r"is not valid JSON"),
        (json.dumps({"nbformat": 3, "nbformat_minor": 0, "worksheets": []}), r"nbformat 3"),
        (json.dumps({"hello": "world"}), r"not a Jupyter notebook"),
    ],
)
def test_unreadable_file_exit_2_one_line(tmp_path: Path, capsys, content, match):
    path = tmp_path / "bad.ipynb"
    path.write_text(content)
    code, out, err = _run(capsys, "analyze", str(path))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: ")
    assert re.search(match, err)
    assert path.read_text() == content


@pytest.mark.parametrize(
    ("cells", "cell", "match"),
    [
        ((("x = 1", ["step:a", "step:b"]),), 0, "two step tags"),
        (("x = 1", ("def f(:\n  pass", ["step:a"])), 1, "syntax error"),
        ((("x = 1", ["step:a", "prev:b"]), ("y = 2", ["step:b"])), 0, "prev:b"),
        ((("x = 1", ["step:a", "limit:memory"]),), 0, "limit:RESOURCE:VALUE"),
    ],
)
def test_bad_cells_exit_2_naming_the_cell(tmp_path: Path, capsys, cells, cell, match):
    path = _save(tmp_path, "bad.ipynb", *cells)
    before = path.read_bytes()
    code, out, err = _run(capsys, "analyze", str(path), "--json")
    assert code == 2 and out == ""
    assert err.startswith(f"error: {path}: cell {cell}: ") and err.count("\n") == 1
    assert match in err and "Traceback" not in err
    assert path.read_bytes() == before


def test_usage_errors_exit_2(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["analyze"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["analyze", "x.ipynb", "--json", "--dot"])
    assert exc.value.code == 2
    code, _, err = _run(capsys, "analyze", str(tmp_path / "missing.ipynb"))
    assert code == 2 and "no such file" in err


def test_console_script_subprocess(good: Path, tmp_path: Path):
    exe = Path(sys.executable).with_name("jupyter-pipeline")
    assert exe.exists(), "the package is installed with its console script"
    before = good.read_bytes()
    env = dict(os.environ, NO_COLOR="1")
    ok = subprocess.run(
        [str(exe), "analyze", str(good), "--json"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert [s["name"] for s in json.loads(ok.stdout)["steps"]] == [
        "load-data",
        "change",
        "maybe",
        "report",
    ]
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{oops")
    res = subprocess.run([str(exe), "analyze", str(bad)], capture_output=True, text=True, env=env)
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {bad}: ") and res.stderr.count("\n") == 1
    assert good.read_bytes() == before


# ----------------------------------------------------------------------------- output for people


@pytest.fixture
def untagged(tmp_path: Path) -> Path:
    """No step tags; the parameters cell splits the notebook into main and main-2."""
    return _save(
        tmp_path,
        "untagged.ipynb",
        "import math\nx = 1",
        ("n = 3", ["parameters"]),
        "print(math.sqrt(n) + x)",
    )


def test_dot_labels_break_lines_as_dot_does(good: Path, untagged: Path, capsys):
    _, out, _ = _run(capsys, "analyze", str(good), "--dot")
    # dot's line break inside a quoted string is one backslash and n, not an escaped backslash
    assert '"load-data" [label="load_Data\\ncells 2"];' in out
    assert "\\\\" not in out
    _, out, _ = _run(capsys, "analyze", str(untagged), "--dot")
    nodes = re.findall(r'^  "[^"]+" \[label="([^"]*)"\];$', out, re.M)
    assert nodes == ["main\\ncells 0", "main-2\\ncells 2"]


def test_mermaid_labels_steps_that_share_a_display_name_apart(untagged: Path, capsys):
    _, out, _ = _run(capsys, "analyze", str(untagged), "--mermaid")
    assert dict(re.findall(r'^  (s\d+)\["([^"]*)"\]$', out, re.M)) == {"s0": "main", "s1": "main-2"}


def test_untagged_notebook_split_in_two_says_why(untagged: Path, capsys):
    _, out, _ = _run(capsys, "analyze", str(untagged))
    text = " ".join(out.split())
    assert (
        "no step: tags, so the notebook is one step 'main', split where the parameters cell "
        "runs: the cells after it are step 'main-2'" in text
    )


def test_report_in_80_columns_keeps_names_whole_and_indents_wrapped_lines(
    tmp_path: Path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "80")
    names = ["X_train_scaled_for_the_logistic_model", "y_train_labels_encoded"]
    path = _save(
        tmp_path,
        "long.ipynb",
        (f"{names[0]} = [1]\n{names[1]} = [2]", ["step:prepare_the_training_data"]),
        (f"print({names[0]}, {names[1]})", ["step:logistic_regression_with_scaling"]),
        (f"print({names[1]})\nprint(undefined_name_here)", ["step:random_forest_classifier"]),
    )
    code, out, _ = _run(capsys, "analyze", str(path))
    assert code == 1  # the undefined name
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out
    for word in [*names, "prepare-the-training-data", "logistic-regression-with-scaling"]:
        assert word in out, word  # whole, on one line
    # Wrapped lines of edges and diagnostics are indented under their item, never at column 0.
    tail = lines[lines.index("edges") :]
    assert all(
        line.startswith("  ")
        for line in tail[1:]
        if line not in ("diagnostics",) and "steps," not in line
    )
