"""``run`` against papermill itself: the cases papermill's own tests cover, parameters, clean
stops, errors without error outputs, kernel names and Ctrl-C.

Every test runs the same notebook through real papermill and through ``jupyter-pipeline run``
(one step, and split per cell) and compares what a papermill user looks at: the printed
outputs, the exit code and the failing cell. The notebooks are built in-test
(``papermill_cases.py``), one per behaviour papermill's test notebooks exercise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import papermill
import pytest
from click.testing import CliRunner
from helpers import code_cell, stream_text, write_nb
from helpers import run as analyze_run
from papermill.cli import _resolve_type
from papermill.cli import papermill as papermill_cli
from papermill_cases import write_case

from jupyter_pipeline.cli import main
from jupyter_pipeline.cli.run import join_parameter_words, parse_parameters
from jupyter_pipeline.runners.verify import compare_notebooks
from jupyter_pipeline.store import RunStore


def _papermill(nb: Path, out: Path, parameters: dict[str, Any] | None = None) -> int | None:
    """Run papermill; the failing cell's index (None if the run succeeded)."""
    try:
        papermill.execute_notebook(
            str(nb),
            str(out),
            parameters=parameters,
            progress_bar=False,
            cwd=str(nb.parent),
            language="python",  # helpers.write_nb notebooks name no language
        )
    except papermill.PapermillExecutionError as exc:
        return int(exc.cell_index)
    return None


def _run(tmp_path: Path, nb: Path, *extra: str) -> tuple[int, Path, Any]:
    """``jupyter-pipeline run``: exit code, merged notebook, the run's record."""
    out = tmp_path / f"run-{len(list(tmp_path.glob('run-*')))}.ipynb"
    store = tmp_path / "runs.sqlite"
    code = main(["run", str(nb), "-o", str(out), "--store", str(store), "--no-cache", *extra])
    runs = RunStore(store).list_runs(limit=1) if store.exists() else []
    return code, out, runs[0] if runs else None


def _failing_cell(run: Any) -> int | None:
    cells = [s.error_cell for s in run.steps if s.state.value == "failed"]
    assert len(cells) <= 1, run
    return cells[0] if cells else None


def _read(path: Path) -> Any:
    return nbformat.read(str(path), as_version=4)


# case (papermill_cases), parameters, papermill's failing cell (None: the run succeeds)
SAME = [
    ("simple_execute_with_parameters", {"msg": "Hello"}, None),
    ("no_parameters_cell", None, None),
    ("report_mode", {"base": 3}, None),
    ("no_executed_results", {"name": "world"}, None),
    ("nbformat_4_4", {"var": 7}, None),  # papermill's test passes "It works": see below
    ("reads_file_next_to_notebook", None, None),
    ("logging_output", None, 2),  # the import of a package that is not installed
    ("sys_exit", None, None),  # sys.exit(): a clean stop
    ("sys_exit_0", None, None),
    ("raise_system_exit", None, None),
    ("sys_exit_1", None, 1),  # sys.exit(1) is a failure
    ("line_magic_error", None, 0),  # a UsageError on stderr, no error output
]


@pytest.mark.kernel
@pytest.mark.parametrize(("name", "parameters", "failing"), SAME, ids=[s[0] for s in SAME])
def test_papermill_test_notebooks_run_the_same(
    name: str, parameters: dict[str, Any] | None, failing: int | None, tmp_path: Path, capsys
) -> None:
    nb = write_case(tmp_path, name)
    expected = tmp_path / "papermill.ipynb"
    assert _papermill(nb, expected, parameters) == failing
    straight = _read(expected)
    flags = [f"{k}={v}" for k, v in (parameters or {}).items()]
    for split in ("tags", "cells"):
        args = [a for f in flags for a in ("-p", f)] + ["--split", split]
        code, merged, run = _run(tmp_path, nb, *args)
        printed = capsys.readouterr()
        assert code == (0 if failing is None else 1), (split, printed)
        assert _failing_cell(run) == failing, (split, run)
        diffs = compare_notebooks(straight, _read(merged), _read(nb), stderr=True)
        if failing is not None and split == "cells":
            # Documented: cells that do not depend on the failing one still run when split.
            later = [d for d in diffs if d.cell > failing and d.expected == []]
            assert later == diffs, (split, [d.diff() for d in diffs])
        else:
            assert diffs == [], (split, [d.diff() for d in diffs])
        if failing is not None:
            assert f"in cell {failing}:" in printed.err
        assert "no error recorded" not in printed.out + printed.err


# Deliberate differences (README, "Coming from papermill"): a syntax error anywhere is
# refused before anything runs, naming the cell; papermill runs up to it.
REFUSED = [
    # papermill fails at `assert False` first (its cell 4: it drops the two old error-marker
    # cells before running); ours names cell 7 of the file, the Python 2 `print '…'`.
    ("syntax_error_after_stale_error_markers", 7, 4),
    ("syntax_error_after_failing_cell", 2, 1),  # papermill: cell 1 raises first
    ("complex_parameters", 0, None),  # `= 4` in the parameters cell; papermill injects nothing
]


@pytest.mark.kernel
@pytest.mark.parametrize(("name", "cell", "papermill_cell"), REFUSED, ids=[r[0] for r in REFUSED])
def test_syntax_errors_are_refused_before_running(
    name: str, cell: int, papermill_cell: int | None, tmp_path: Path, capsys
) -> None:
    nb = write_case(tmp_path, name)
    if papermill_cell is not None:
        assert _papermill(nb, tmp_path / "papermill.ipynb") == papermill_cell
    code, merged, run = _run(tmp_path, nb)
    err = capsys.readouterr().err
    assert code == 2
    assert run is None and not merged.exists()
    assert f"cell {cell}" in err and "syntax error" in err


def test_unknown_or_mistyped_parameter_is_refused(tmp_path: Path, capsys) -> None:
    # papermill only warns ("Passed unknown parameter") and runs; a typo is an error here.
    nb = write_case(tmp_path, "simple_execute_with_parameters")
    code, _, run = _run(tmp_path, nb, "-p", "mgs", "Hello")
    assert code == 2 and run is None
    assert "unknown parameter 'mgs'" in capsys.readouterr().err
    # papermill's own test sets `var = 1` to "It works"; here a parameter keeps its type.
    nb = write_case(tmp_path, "nbformat_4_4")
    code, _, run = _run(tmp_path, nb, "-p", "var", "It works")
    assert code == 2 and run is None
    assert "parameter var is int (default 1, cell 0); got 'It works'" in capsys.readouterr().err


# ---------------------------------------------------------------------- 1. parameters recorded


@pytest.mark.kernel
def test_parameters_recorded_as_papermill_records_them(tmp_path: Path) -> None:
    nb = write_case(tmp_path, "simple_execute_with_parameters")
    expected = tmp_path / "papermill.ipynb"
    assert _papermill(nb, expected, {"msg": "Hello"}) is None
    code, merged_path, run = _run(tmp_path, nb, "-p", "msg", "Hello")
    assert code == 0
    straight, merged = _read(expected), _read(merged_path)
    tags = [c.metadata.get("tags", []) for c in merged.cells]
    assert tags[:2] == [["parameters"], ["injected-parameters"]]
    assert [c.metadata.get("tags", []) for c in straight.cells][:2] == tags[:2]
    assert merged.cells[1].source == straight.cells[1].source  # '# Parameters\nmsg = "Hello"\n'
    assert merged.cells[0].source == "msg = None"  # the defaults stay as they were
    assert merged.metadata.papermill.parameters == straight.metadata.papermill.parameters
    assert merged.metadata.papermill.parameters == {"msg": "Hello"}
    ours = merged.metadata.jupyter_pipeline
    assert ours["run_id"] == run.id and ours["parameters"] == {"msg": "Hello"}
    assert merged.cells[2].metadata.jupyter_pipeline == {"step": "main"}
    assert stream_text(merged.cells[2]) == stream_text(straight.cells[2]) == "Hello\n"
    # No overrides: papermill adds no cell, and records empty parameters.
    code, merged_path, _ = _run(tmp_path, nb)
    merged = _read(merged_path)
    assert len(merged.cells) == len(_read(nb).cells)
    assert merged.metadata.papermill.parameters == {}


# ---------------------------------------------------------------------- 2. values as papermill


@pytest.mark.parametrize(
    "text", ["True", "False", "None", "5", "-3", "0.5", "1e3", "nan", "inf", '"Hello"', "x y", ""]
)
def test_values_parse_as_papermills_cli(text: str) -> None:
    # `v = None`: no type to keep, so the value is exactly what papermill's -p makes of it.
    pipeline = analyze_run(("v = None\ns = 'text'", ["parameters"]), "print(v, s)")
    got = parse_parameters([f"v={text}", f"s={text}"], pipeline)
    want = _resolve_type(text)
    assert type(got["v"]) is type(want)
    assert got["v"] == want or (got["v"] != got["v"] and want != want)  # nan
    assert got["s"] == text  # a string parameter takes the text as it is


def test_two_word_flags_are_papermills() -> None:
    argv = ["run", "nb.ipynb", "-p", "msg", "a=b", "-r", "n", "5", "-p", "x=1", "-p", "y", "-1"]
    assert join_parameter_words(argv) == [
        "run",
        "nb.ipynb",
        "-p",
        "msg=a=b",
        "-r",
        "n=5",
        "-p",
        "x=1",
        "-p",
        "y=-1",
    ]


STRINGS_NB = [
    code_cell("msg = 'default'\nregion = 'eu'\nn = 1\nrate = 0.5\nflags = [1]", "parameters"),
    code_cell("print(repr(msg), repr(region), repr(n), repr(rate), repr(flags))"),
]


def _papermill_cli(nb: Path, out: Path, *args: str) -> str:
    result = CliRunner().invoke(
        papermill_cli,
        [str(nb), str(out), "--no-progress-bar", "--language", "python", *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return stream_text(_read(out).cells[2])


@pytest.mark.kernel
def test_values_and_flags_reach_the_notebook_as_with_papermill(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "strings.ipynb", STRINGS_NB)
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("rate: 0.25\nn: 7\n")
    # Same words to papermill's CLI and to ours (region: a string parameter takes "5" as text).
    words = ["-p", "msg", '"Hello"', "-p", "region", "5", "-f", str(yaml_file)]
    words += ["-y", "n: 8", "-r", "msg", "raw text"]
    expected = _papermill_cli(nb, tmp_path / "papermill.ipynb", *words[:-3])
    code, merged, _ = _run(tmp_path, nb, *words[:-3])
    assert code == 0
    # papermill: region=5 (an int); ours: '5', as the parameter's default is a string.
    assert expected == "'\"Hello\"' 5 8 0.25 [1]\n"
    assert stream_text(_read(merged).cells[2]) == "'\"Hello\"' '5' 8 0.25 [1]\n"
    expected = _papermill_cli(nb, tmp_path / "papermill.ipynb", *words)
    code, merged, _ = _run(tmp_path, nb, *words)
    assert code == 0
    assert stream_text(_read(merged).cells[2]) == expected.replace(" 5 ", " '5' ")
    assert expected.startswith("'raw text'")
    # Types are still checked: a list parameter given text is refused (exit 2).
    assert _run(tmp_path, nb, "-p", "flags", "oops")[0] == 2
    assert _run(tmp_path, nb, "-p", "flags", "[2, 3]")[0] == 0


# ---------------------------------------------------------------------- 4. a clean stop


STOP_NB = [
    code_cell("import sys\nx = 1\nprint('first')", "step:a"),
    code_cell("print('a', x)\nsys.exit()\nprint('not printed')"),
    code_cell("open('later.txt', 'w').write('ran')\nprint('b')", "step:b"),
    code_cell("print('c', x)", "step:c"),
]


@pytest.mark.kernel
@pytest.mark.parametrize("split", ["tags", "cells"])
def test_sys_exit_stops_the_pipeline_as_it_stops_papermill(
    split: str, tmp_path: Path, capsys
) -> None:
    nb = write_nb(tmp_path / "stop.ipynb", STOP_NB)
    expected = tmp_path / "papermill.ipynb"
    assert _papermill(nb, expected) is None
    assert not (tmp_path / "later.txt").exists()
    code, merged, run = _run(tmp_path, nb, "--split", split)
    printed = capsys.readouterr()
    assert code == 0, printed
    assert not (tmp_path / "later.txt").exists()  # nothing after the stop ran, not even early
    assert compare_notebooks(_read(expected), _read(merged)) == []
    states = {s.step: (s.state.value, s.error) for s in run.steps}
    later = [s for s in run.steps if min(s_cells(run, s.step)) > 1]
    assert later and all(
        states[s.step] == ("skipped", "the notebook stopped at cell 1") for s in later
    )
    assert "NameError" not in printed.out + printed.err
    assert "skipped: the notebook stopped at cell 1" in printed.out
    assert run.state.value == "succeeded"


def s_cells(run: Any, step: str) -> list[int]:
    pipeline = json.loads((Path(run.run_dir) / "pipeline.json").read_text())
    return next(s["cells"] for s in pipeline["steps"] if s["name"] == step)


# ---------------------------------------------------------------------- 6. kernel names


@pytest.mark.kernel
def test_kernel_named_python_runs_as_with_papermill(tmp_path: Path) -> None:
    nb = write_nb(tmp_path / "k.ipynb", [code_cell("import sys\nprint(sys.version_info[0])")])
    source = _read(nb)
    source.metadata.kernelspec = {"name": "python", "display_name": "Python", "language": "python"}
    nbformat.write(source, str(nb))
    expected = tmp_path / "papermill.ipynb"
    assert _papermill(nb, expected) is None
    code, merged, _ = _run(tmp_path, nb)
    assert code == 0
    assert stream_text(_read(merged).cells[0]) == stream_text(_read(expected).cells[0]) == "3\n"


def test_unknown_kernel_is_still_refused(tmp_path: Path, capsys) -> None:
    nb = write_nb(tmp_path / "k.ipynb", [code_cell("print(1)")])
    source = _read(nb)
    source.metadata.kernelspec = {"name": "no-such-kernel", "display_name": "X", "language": "x"}
    nbformat.write(source, str(nb))
    assert _run(tmp_path, nb)[0] == 2
    assert "kernel 'no-such-kernel' is not installed" in capsys.readouterr().err


# ---------------------------------------------------------------------- 7. Ctrl-C


def _heard(cwd: Path, logs: str) -> bool:
    """True once a file matching ``logs`` under ``cwd`` holds the sleeping cell's print."""
    for path in cwd.glob(logs):
        try:
            if "sleeping" in path.read_text(errors="replace"):
                return True
        except OSError:
            pass
    return False


def _interrupt(cmd: list[str], cwd: Path, logs: str) -> tuple[int, str]:
    """Start ``cmd``, send SIGINT once the sleeping cell's output reached the runner (it wrote
    it to a file matching the glob ``logs``: papermill's --stdout-file, a step's log.txt);
    exit code and output."""
    began = cwd / "began"
    began.unlink(missing_ok=True)
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # The kernel writes `began` right after printing, but the print travels to the runner on
    # its own (iopub): a fixed wait after `began` lost it on a loaded machine. The runner writes
    # stdout it received to its log, so that file holding the print is the condition to wait
    # for.
    deadline = time.monotonic() + 120
    while not _heard(cwd, logs) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert began.exists(), "the sleeping cell never began"
    assert _heard(cwd, logs), "the runner never received the sleeping cell's output"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


@pytest.mark.kernel
def test_ctrl_c_writes_what_ran_like_papermill(tmp_path: Path) -> None:
    nb = write_case(tmp_path, "keyboard_interrupt")
    bindir = Path(sys.executable).parent
    expected = tmp_path / "papermill.ipynb"
    _interrupt(
        [str(bindir / "papermill"), str(nb), str(expected), "--stdout-file", "pm-stdout.txt"],
        tmp_path,
        "pm-stdout.txt",
    )
    merged = tmp_path / "merged.ipynb"
    env_store = ["--store", str(tmp_path / "runs.sqlite")]
    code, out = _interrupt(
        [str(bindir / "jupyter-pipeline"), "run", str(nb), "-o", str(merged), *env_store],
        tmp_path,
        "runs/**/log.txt",
    )
    assert code == 130, out
    assert "Kernel died" not in out and "Traceback" not in out, out
    assert merged.exists(), out
    ours, theirs = _read(merged), _read(expected)
    for k in range(3):
        assert stream_text(ours.cells[k]) == stream_text(theirs.cells[k]), k
    assert stream_text(ours.cells[1]) == "sleeping\n"
    assert ours.cells[2].execution_count is None
    assert f"merged notebook: {merged}" in out
    assert os.path.exists(merged)


# ---------------------------------------------------------------------- 3. computed values


DERIVED_NB = [
    code_cell("import os", "imports"),
    code_cell(
        "a = 1\nd = a == 3\nbase = os.path.join('x', str(a))\nb = 2\nlayers = [1]\n"
        "layers.append(2)",
        "parameters",
    ),
    code_cell("print(a, d, base, b, layers)", "step:one"),
    code_cell("print(d, b)", "step:two"),
]


@pytest.mark.kernel
@pytest.mark.parametrize("split", ["tags", "cells"])
def test_computed_values_in_the_parameters_cell_as_papermill(
    split: str, tmp_path: Path, capsys
) -> None:
    nb = write_nb(tmp_path / "derived.ipynb", DERIVED_NB)
    expected = tmp_path / "papermill.ipynb"
    assert _papermill(nb, expected, {"a": 3, "b": 5}) is None
    code, merged, _ = _run(tmp_path, nb, "-p", "a", "3", "-p", "b", "5", "--split", split)
    assert code == 0, capsys.readouterr()
    assert compare_notebooks(_read(expected), _read(merged)) == []
    # papermill computes d and base before its injected overrides: from the defaults.
    # (layers.append(2) changes a parameter in place: it runs too, in the step reading it.)
    assert stream_text(_read(merged).cells[3]) == "3 False x/1 5 [1, 2]\n"
    # Only a computed name given with -p is an error.
    capsys.readouterr()
    assert _run(tmp_path, nb, "-p", "d", "True")[0] == 2
    assert "'d' is computed in the parameters cell (cell 1, line 2)" in capsys.readouterr().err


def test_a_name_without_value_is_not_joined_with_an_option() -> None:
    assert join_parameter_words(["run", "nb", "-p", "oops", "--store", "s"]) == [
        "run",
        "nb",
        "-p",
        "oops",
        "--store",
        "s",
    ]


@pytest.mark.kernel
def test_matplotlib_magic_error_is_named_with_its_cell(tmp_path: Path, capsys) -> None:
    # The case: IPython does not report it as an error output.
    nb = write_nb(
        tmp_path / "mpl.ipynb",
        [code_cell("x = 1"), code_cell("%matplotlib nonexistent_backend"), code_cell("print(x)")],
    )
    assert _papermill(nb, tmp_path / "papermill.ipynb") == 1
    code, _, run = _run(tmp_path, nb)
    err = capsys.readouterr().err
    assert code == 1 and _failing_cell(run) == 1
    assert "step main failed in cell 1: " in err and "nonexistent_backend" in err
    assert "no error recorded" not in err
