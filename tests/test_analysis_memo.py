"""The per-cell analysis memo: an edited notebook analyzed warm (the memo holding the cells
of its earlier version) gives exactly the Pipeline JSON a cold analysis gives in a fresh
process, over the edits an editor makes: change a cell, change tags, insert, remove or move
a cell, edit the parameters cell, duplicate a cell.
"""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.analysis.memo import MEMO_SIZE, analyzed_cell, clear_memo, memo_info
from jupyter_pipeline.notebook import NotebookError
from tests.helpers import md, nb
from tests.test_analysis_property import build_notebook

Edit = Callable[[nbformat.NotebookNode], None]

BASE = nb(
    ("import numpy as np\nimport pandas as pd\nimport random", ["imports"]),
    ("def scale(v, k=2):\n    return v * k * factor\n", ["functions"]),
    ("rate = 0.5\nepochs = 3\nlayers = [1, 2]\nname = 'run'\nfactor = rate * 2", ["parameters"]),
    md("## Load"),
    ("random.seed(1)\nnp.random.seed(epochs)\ndata = np.arange(10) * rate", ["step:load"]),
    "frame = pd.DataFrame({'a': data})\nframe.to_csv('frame.csv')",
    (
        "if rate > 0.1:\n    extra = data + 1\nelse:\n    extra = data - 1\nrows = [data]",
        ["step:prep"],
    ),
    "for r in rows:\n    r += 1\ntotal = sum(scale(x) for x in data)",
    (
        "class Model:\n    def __init__(self, w):\n        self.w = w\n"
        "    def fit(self, x):\n        return x * self.w + bias\n"
        "bias = random.random()\nm = Model(rate)\nfit = m.fit(extra)",
        ["step:train", "prev:load"],
    ),
    "counts = {}\ntry:\n    counts['x'] = len(frame)\nexcept KeyError as e:\n    pass",
    ("check = pd.read_csv('frame.csv')\nprint(total, fit, counts)", ["step:report"]),
    ("%time later = total * 2\n!echo done", []),
    ("accuracy = float(fit.mean())\nloss = 1 - accuracy", ["step:score"]),
    ("print(accuracy)", ["pipeline-metrics"]),
    ("scratch = undefined_thing + 1", ["skip"]),
)


def _src(book: nbformat.NotebookNode, i: int, source: str) -> None:
    book.cells[i].source = source


def _tags(book: nbformat.NotebookNode, i: int, tags: list[str]) -> None:
    book.cells[i].metadata["tags"] = tags


def _move(book: nbformat.NotebookNode, i: int, j: int) -> None:
    book.cells.insert(j, book.cells.pop(i))


EDITS: dict[str, Edit] = {
    "change-cell": lambda b: _src(b, 7, b.cells[7].source + "\ntotal = total + extra.sum()"),
    "change-cell-rebinds": lambda b: _src(b, 5, "frame = pd.DataFrame({'a': data})\ndel data"),
    "conditional-edit": lambda b: _src(b, 6, "if rate > 0.1:\n    extra = data + 1\nrows = [data]"),
    "tags-rename-step": lambda b: _tags(b, 6, ["step:prepare"]),
    "tags-untag-step": lambda b: _tags(b, 10, []),
    "tags-to-skip": lambda b: _tags(b, 9, ["skip"]),
    "tags-prev-added": lambda b: _tags(b, 12, ["step:score", "prev:prep"]),
    "insert-cell": lambda b: b.cells.insert(
        8, nbformat.v4.new_code_cell("extra = extra * factor\nlayers.append(4)")
    ),
    "insert-step": lambda b: b.cells.insert(
        10,
        nbformat.v4.new_code_cell(
            "import math\nangle = math.pi * rate", metadata={"tags": ["step:angle"]}
        ),
    ),
    "remove-cell": lambda b: b.cells.pop(9),
    "remove-step-cell": lambda b: b.cells.pop(10),
    "move-cell-up": lambda b: _move(b, 9, 5),
    "move-cell-down": lambda b: _move(b, 5, 9),
    "parameters-edited": lambda b: _src(
        b, 2, "rate = 0.25\nepochs = 5\nlayers = [1]\nname = 'x'\nfactor = rate * 3\nseed = 7"
    ),
    "parameters-derived-removed": lambda b: _src(b, 2, "rate = 0.5\nepochs = 3\nfactor = 1.0"),
    "functions-edited": lambda b: _src(b, 1, "def scale(v, k=3):\n    return v * k\n"),
    "duplicate-cell": lambda b: b.cells.insert(8, nbformat.v4.new_code_cell(b.cells[7].source)),
    "duplicate-definition": lambda b: b.cells.insert(
        11, nbformat.v4.new_code_cell(b.cells[8].source)
    ),
    "skip-syntax-error": lambda b: _src(b, 14, "this is not python ("),
}


def _edited() -> dict[str, nbformat.NotebookNode]:
    out = {}
    for name, edit in EDITS.items():
        book = copy.deepcopy(BASE)
        edit(book)
        out[name] = book
    return out


def _json(book: nbformat.NotebookNode) -> str:
    return analyze(book, path="memo.ipynb").model_dump_json()


def test_warm_analysis_of_each_edit_equals_a_cold_one_in_a_fresh_process(tmp_path: Path) -> None:
    edited = _edited()
    for name, book in edited.items():
        nbformat.write(book, str(tmp_path / f"{name}.ipynb"))
    # Cold: every edited notebook analyzed first thing in a new process (empty memo).
    script = (
        "import json, sys, nbformat\n"
        "from jupyter_pipeline.analysis import analyze\n"
        "out = {}\n"
        "for name in sys.argv[2:]:\n"
        "    book = nbformat.read(f'{sys.argv[1]}/{name}.ipynb', as_version=4)\n"
        "    out[name] = analyze(book, path='memo.ipynb').model_dump_json()\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), *edited],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    cold = json.loads(done.stdout)
    for name in edited:
        # Warm: the memo holds every cell of the original (and of the edits before this one).
        clear_memo()
        _json(BASE)
        before = memo_info()
        book = nbformat.read(str(tmp_path / f"{name}.ipynb"), as_version=4)
        warm = _json(book)
        assert warm == cold[name], name
        assert memo_info()["hits"] > before["hits"], f"{name}: the memo was not used"


def test_an_edit_of_one_cell_scopes_only_that_cell_again() -> None:
    clear_memo()
    _json(BASE)
    misses = memo_info()["misses"]
    book = copy.deepcopy(BASE)
    book.cells[7].source += "\nmore = 1"
    _json(book)
    assert memo_info()["misses"] == misses + 1


def test_analyzing_again_in_one_process_is_stable() -> None:
    """Warm after warm: the same edit sequence twice gives the same JSON each time."""
    edited = _edited()
    first = {name: _json(book) for name, book in edited.items()}
    second = {name: _json(book) for name, book in reversed(list(edited.items()))}
    assert first == second


def test_two_cells_with_one_source_keep_their_own_identities() -> None:
    """The second copy of a cell gets fresh statement ids: a definition in each copy is
    a definition of its own (a memo sharing them would merge the two)."""
    clear_memo()
    cell = "def f():\n    return base + 1\nvalue = f()"
    book = nb(
        ("base = 1", ["step:a"]),
        (cell, ["step:b"]),
        ("base = 2", ["step:c"]),
        (cell, ["step:d"]),
        ("print(value)", ["step:e"]),
    )
    warm = _json(book)
    clear_memo()
    assert _json(book) == warm
    pipeline = json.loads(warm)
    d = next(s for s in pipeline["steps"] if s["name"] == "d")
    assert d["inputs"] == ["base"]
    assert d["depends_on"] == ["c"]


# Found by generated programs: three cells, the first and last of one source. Their facts
# sharing statement ids (one definition statement for both `class a`) changed which
# function effects were charged, and in what order.
_REPEATED = (
    "while g.items(random[-2]):\n    class a:\n        attr = items()\n"
    "        def random(self, b):\n            n.items(x)\n            return np[-2]\n"
    "    df(C, inplace=True)\nif a.copy({'k': 1}):\n    match n:\n        case [f, *np]:\n"
    "            items(items, inplace=True)\n        case _:\n            random.seed(1)\n"
    "err += (np[4] + (lambda f: np))"
)
_BETWEEN = (
    "C[a] = b\nclass n:\n    attr = [err * 2 for err in [np * 2 for np in a if random] if f]\n"
    "    @x\n    def __init__(self):\n        self.value = ((0 + a) + (lambda np: df))\n"
    "        a = n\n        return a()"
)


@pytest.mark.parametrize("warm", [False, True])
def test_a_repeated_source_is_analyzed_as_if_it_differed(warm: bool) -> None:
    """A cell repeated verbatim gives the result of the same cell with a different source
    (a trailing comment: the same code, so the same analysis, but never the same memo entry)."""
    clear_memo()
    if warm:
        _json(nb((_REPEATED, ["step:prep"])))
    same = nb(
        (_REPEATED, ["step:prep"]),
        (_BETWEEN, ["step:load", "prev:prep"]),
        (_REPEATED, ["step:prep"]),
    )
    apart = nb(
        (_REPEATED, ["step:prep"]),
        (_BETWEEN, ["step:load", "prev:prep"]),
        (_REPEATED + "\n# copy", ["step:prep"]),
    )
    assert _json(same) == _json(apart)


def test_the_memo_is_bounded() -> None:
    clear_memo()
    for k in range(MEMO_SIZE + 50):
        analyzed_cell(f"x{k} = {k}")
    assert memo_info()["size"] == MEMO_SIZE
    # the least recently used went first
    analyzed_cell("x0 = 0")
    assert memo_info()["misses"] == MEMO_SIZE + 51


def test_a_syntax_error_is_memoized_and_still_reported() -> None:
    clear_memo()
    book = nb(("x = (", ["step:a"]))
    for _ in range(2):
        with pytest.raises(Exception, match="syntax error"):
            _json(book)
    assert memo_info()["hits"] == 1


def _outcome(book: nbformat.NotebookNode) -> str:
    try:
        return _json(book)
    except NotebookError as exc:  # (a generated cell may be a syntax error)
        return f"NotebookError: {exc}"


def _random_edit(book: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """One editor action on a copy of ``book``, chosen by ``seed``; cells of the notebook
    are reused (as sources or duplicates) so memoized facts recur in new places."""
    r = random.Random(seed)
    out = copy.deepcopy(book)
    cells = out.cells
    i, j = r.randrange(len(cells)), r.randrange(len(cells))
    action = r.randrange(6)
    if action == 0:  # a cell's source becomes another's (a duplicate source)
        cells[i].source = cells[j].source
    elif action == 1:  # an edit inside a cell
        cells[i].source += r.choice(["\nx = 2", "\nif n:\n    a = b", "\ndel x", "\nprint(a)"])
    elif action == 2:  # tags change
        cells[i].metadata["tags"] = list(cells[j].metadata.get("tags", []))[::-1][:1]
    elif action == 3:  # removed
        if len(cells) > 1:
            cells.pop(i)
    elif action == 4:  # moved
        cells.insert(j, cells.pop(i))
    else:  # a copy inserted elsewhere
        cells.insert(j, nbformat.v4.new_code_cell(cells[i].source, metadata=cells[i].metadata))
    return out


# Explicit settings: without them this test took whichever profile another module loaded
# (test_analysis_property's "ci" one is 2000 examples, each here 2-4 versions analyzed twice:
# 5 minutes of a CI run, and 100 examples when run alone). 400 under HYPOTHESIS_PROFILE=ci
# analyze as many notebooks as the property test's 2000 / 1; 100 otherwise.
@settings(
    max_examples=400 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=10).map(build_notebook),
    st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3),
)
def test_random_edits_analyzed_warm_equal_cold(book: nbformat.NotebookNode, seeds: list[int]):
    """Generated programs (the property test's), edited a few times in a row: each version
    analyzed with the memo holding the earlier versions equals it analyzed with an empty memo."""
    versions = [book]
    for seed in seeds:
        versions.append(_random_edit(versions[-1], seed))
    clear_memo()
    warm = [_outcome(v) for v in versions]
    cold = []
    for v in versions:
        clear_memo()
        cold.append(_outcome(v))
    assert warm == cold
