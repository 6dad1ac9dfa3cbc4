"""Notebooks for the papermill parity tests, built in-test with nbformat.

One builder per behaviour that papermill's own test suite exercises (parameters, clean stops,
errors that are no error output, syntax errors, old nbformat versions, files next to the
notebook, stale outputs). The cell sources are ours, written for the behaviour each case is
about; :func:`write_case` writes a case, and any file it reads, into a folder.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat import v4

# What Jupyter writes for a Python kernel; papermill reads the language from it.
_KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
_LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python"}


def _code(source: str, *tags: str, count: int | None = None, outputs: list | None = None):
    cell = v4.new_code_cell(source, execution_count=count, outputs=outputs or [])
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _md(source: str, *tags: str):
    cell = v4.new_markdown_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return v4.new_notebook(
        cells=list(cells),
        metadata={"kernelspec": dict(_KERNELSPEC), "language_info": dict(_LANGUAGE_INFO)},
    )


def _stdout(text: str) -> nbformat.NotebookNode:
    return v4.new_output("stream", name="stdout", text=text)


# ---------------------------------------------------------------------- parameters


def simple_execute_with_parameters() -> nbformat.NotebookNode:
    """A parameters cell, a cell printing the parameter (with papermill's description
    comment), and an empty markdown cell at the end."""
    return _notebook(
        _code("msg = None", "parameters"),
        _code("# papermill_description=show_the_message\nprint(msg)"),
        _md(""),
    )


def no_parameters_cell() -> nbformat.NotebookNode:
    """A default that is not tagged ``parameters``; the last cell is empty."""
    return _notebook(
        _code('msg = "set in an untagged cell"'),
        _code("print(msg)"),
        _code(""),
    )


def report_mode() -> nbformat.NotebookNode:
    """Two parameters and a function that shadows a builtin (papermill's report-mode
    notebook: its inputs are hidden there; the outputs are what counts)."""
    return _notebook(
        _code("base = 2\nexponent = 5", "parameters"),
        _code("def pow(x, y):\n    return x**y"),
        _code("print(pow(base, exponent))"),
    )


def no_executed_results() -> nbformat.NotebookNode:
    """A notebook that is only a parameters cell: nothing to print, nothing executed yet."""
    return _notebook(
        _code("# Parameters\nrepeat = 2\nname = 'hello'\n", "parameters"),
    )


def nbformat_4_4() -> nbformat.NotebookNode:
    """An nbformat 4.4 notebook (no cell ids) saved with stale execution counts and output."""
    notebook = _notebook(
        _code("# Parameters\nvar = 1", "parameters", count=3),
        _code("print(var * 10)", count=4, outputs=[_stdout("10\n")]),
    )
    notebook.nbformat_minor = 4
    for cell in notebook.cells:
        cell.pop("id", None)  # ids came with 4.5
    return notebook


def complex_parameters() -> nbformat.NotebookNode:
    """A parameters cell with annotations, a list over several commented lines, a type
    comment, a computed line, and one line that is not Python (a syntax error)."""
    return _notebook(
        _code(
            "title = None\n"
            "threshold: float = 0.75  # share of rows to keep\n"
            "columns = [\n"
            "    'when',  # the timestamp\n"
            "    # a comment between two items\n"
            "    'value',\n"
            "]  # type: List[str]\n"
            "\n"
            "# an annotation written as a string\n"
            "limit: 'Optional[int]' = None\n"
            "# computed from another parameter\n"
            "strict = threshold > 0.9\n"
            "# the name is missing on the next line\n"
            "= 4\n",
            "parameters",
        ),
        _code("print(title, threshold, columns, limit, strict)"),
    )


# ---------------------------------------------------------------------- clean stops and errors


def _stops_at_cell_1(stop: str) -> nbformat.NotebookNode:
    return _notebook(
        _code("import sys\nprint('before the stop')"),
        _code(stop),
        _code("print('this line must not run')"),
    )


def sys_exit() -> nbformat.NotebookNode:
    """``sys.exit()`` in cell 1: a clean stop."""
    return _stops_at_cell_1("sys.exit()")


def sys_exit_0() -> nbformat.NotebookNode:
    """``sys.exit(0)`` in cell 1: a clean stop."""
    return _stops_at_cell_1("sys.exit(0)")


def sys_exit_1() -> nbformat.NotebookNode:
    """``sys.exit(1)`` in cell 1: a failure."""
    return _stops_at_cell_1("sys.exit(1)")


def raise_system_exit() -> nbformat.NotebookNode:
    """``raise SystemExit`` in cell 1: a clean stop."""
    return _stops_at_cell_1("raise SystemExit")


def line_magic_error() -> nbformat.NotebookNode:
    """An unknown line magic in cell 0: IPython prints a UsageError on stderr, and no error
    output; the next cell must not run."""
    return _notebook(
        _code("%no_such_line_magic --verbose"),
        _code("print('this line must not run')"),
    )


def logging_output() -> nbformat.NotebookNode:
    """Log records on stderr, a print, then an import of a package that is not installed
    (cell 2 fails); saved with stale outputs from an earlier run; the last cell is empty."""
    return _notebook(
        _code(
            "import logging\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "log = logging.getLogger('parity')\n"
            "log.setLevel(logging.INFO)\n"
            "log.info('a record on stderr')",
            count=1,
            outputs=[v4.new_output("stream", name="stderr", text="INFO:parity:old record\n")],
        ),
        _code("print('after the log record')", count=2, outputs=[_stdout("old text\n")]),
        _code(
            "from a_plotting_package_not_installed import sample_data\nsample_data.plot()",
            count=3,
            outputs=[
                v4.new_output("execute_result", data={"text/plain": "<Axes>"}, execution_count=3)
            ],
        ),
        _code(""),
    )


def keyboard_interrupt() -> nbformat.NotebookNode:
    """A cell that sleeps long enough to be interrupted; it leaves a ``began`` file once it
    has printed, so a test knows when to send SIGINT."""
    return _notebook(
        _code("print('start')"),
        _code(
            "import time\nprint('sleeping', flush=True)\nopen('began', 'w').close()\n"
            "time.sleep(120)"
        ),
        _code("print('after')"),
    )


def reads_file_next_to_notebook() -> nbformat.NotebookNode:
    """Reads ``check.txt`` by a relative path: the kernel must start in the notebook's folder."""
    return _notebook(
        _code("import os"),
        _code(
            "print('working directory', os.getcwd())\n"
            "assert os.path.isfile('check.txt')\n"
            "print(open('check.txt').read())"
        ),
    )


# ---------------------------------------------------------------------- syntax errors


def _stale_error_marker(anchor: bool) -> nbformat.NotebookNode:
    # What papermill writes above a failed cell; it removes such cells before it runs again.
    span = '<span id="papermill-error-cell">' if anchor else "<span>"
    return _md(f"{span}An earlier run stopped here.</span>", "papermill-error-cell-tag")


def syntax_error_after_stale_error_markers() -> nbformat.NotebookNode:
    """An earlier papermill run's error markers (cells 0 and 2), markdown cells that shift
    indices, an ``assert False`` (cell 6) and, after it, a Python 2 ``print`` (cell 7)."""
    return _notebook(
        _stale_error_marker(anchor=False),
        _md("Markdown before the code: cell numbers and execution counts differ."),
        _stale_error_marker(anchor=True),
        _code("print('fine so far')", outputs=[_stdout("fine so far\n")]),
        _md("More prose."),
        _md("And more."),
        _code("assert False, 'fails when run'"),
        _code("print 'Python 2 syntax'"),
    )


def syntax_error_after_failing_cell() -> nbformat.NotebookNode:
    """Cell 1 displays HTML then fails (a display output and an error output); cell 2 is a
    Python 2 ``print``."""
    return _notebook(
        _code("print('fine so far')", outputs=[_stdout("fine so far\n")]),
        _code(
            "from IPython.display import HTML, display\n"
            "display(HTML('<b>shown before the failure</b>'))\n"
            "assert 1 + 1 == 3"
        ),
        _code("print 'Python 2 syntax'"),
    )


CASES: dict[str, Callable[[], nbformat.NotebookNode]] = {
    f.__name__: f
    for f in (
        simple_execute_with_parameters,
        no_parameters_cell,
        report_mode,
        no_executed_results,
        nbformat_4_4,
        complex_parameters,
        sys_exit,
        sys_exit_0,
        sys_exit_1,
        raise_system_exit,
        line_magic_error,
        logging_output,
        keyboard_interrupt,
        reads_file_next_to_notebook,
        syntax_error_after_stale_error_markers,
        syntax_error_after_failing_cell,
    )
}

# Files a case reads, written next to its notebook.
COMPANIONS: dict[str, dict[str, str]] = {
    "reads_file_next_to_notebook": {"check.txt": "found next to the notebook\n"},
}


def write_case(folder: Path, name: str) -> Path:
    """Write case ``name`` as ``folder/name.ipynb`` (and the files it reads); its path."""
    for filename, text in COMPANIONS.get(name, {}).items():
        (folder / filename).write_text(text)
    path = folder / f"{name}.ipynb"
    nbformat.write(CASES[name](), str(path))
    return path
