"""The step cache keys on what decides a step's result: data files read, not pre-imports."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import code_cell as _cell
from helpers import write_nb

from jupyter_pipeline.analysis import analyze, analyze_notebook
from jupyter_pipeline.model import EdgeKind, RunState
from jupyter_pipeline.notebook import read_notebook
from jupyter_pipeline.runners.cache import files_read, step_code
from jupyter_pipeline.runners.local import LocalRunner
from jupyter_pipeline.runners.prewarm import add_preimports
from jupyter_pipeline.runtime.notebook import build_step_notebook
from jupyter_pipeline.store import RunStore

CELLS = [
    _cell("import pandas as pd\nimport numpy as np", "imports"),
    _cell(
        "import csv\ndf = pd.read_csv('data/in.csv')\nprint(len(df), csv.QUOTE_ALL)", "step:load"
    ),
    _cell("k = 3\nprint(k)", "step:other"),
    _cell("total = int(df.a.sum()) + k\nprint('total', total)", "step:report"),
]


def _step_nbs(path):
    nb = read_notebook(path)
    pipeline = analyze(nb, str(path))
    return {s.name: build_step_notebook(nb, pipeline, s.name) for s in pipeline.steps}


def test_files_read_finds_literal_paths_the_analysis_knows(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.csv").write_text("a\n1\n")
    (tmp_path / "arr.npy").write_bytes(b"x")
    absolute = tmp_path / "abs.txt"
    absolute.write_text("hello")
    path = write_nb(
        tmp_path / "nb.ipynb",
        [
            _cell("import numpy as np\nimport json", "imports"),
            _cell(
                "arr = np.load('arr.npy')\n"
                f"text = open({str(absolute)!r}).read()\n"
                "missing = open('nope.txt') if False else None\n"
                "with open('mine.json', 'w') as f:\n    json.dump([1], f)\n"
                "mine = json.load(open('mine.json'))",
                "step:one",
            ),
            _cell(
                "import pandas as pd\ndf = pd.read_csv(filepath_or_buffer='data/in.csv')",
                "step:two",
            ),
        ],
    )
    (tmp_path / "mine.json").write_text("[0]")  # exists, but step one writes it first
    nbs = _step_nbs(path)
    one = files_read(nbs["one"], tmp_path)
    assert set(one) == {"arr.npy", str(absolute)}
    two = files_read(nbs["two"], tmp_path)
    assert set(two) == {"data/in.csv"}
    (tmp_path / "data" / "in.csv").write_text("a\n2\n")
    assert files_read(nbs["two"], tmp_path) != two
    os.utime(absolute, ns=(1, 1))  # a new mtime with the same content is the same file
    assert files_read(nbs["one"], tmp_path) == one


IMPORTS = (
    "import json\nimport pathlib\nfrom pathlib import Path\nimport numpy as np\nimport pandas as pd"
)
# (snippet, the file it touches by literal path or None, whether it writes it)
FILE_SNIPPETS = [
    ("t = open('f.txt').read()", "f.txt", False),
    ("t = open(file='f.txt').read()", "f.txt", False),
    ("with open('f.txt') as fh:\n    t = fh.read()", "f.txt", False),
    ("df = pd.read_csv('f.csv')", "f.csv", False),
    ("df = pd.read_csv(filepath_or_buffer='f.csv')", "f.csv", False),
    ("a = np.load('f.npy')", "f.npy", False),
    ("a = np.load(file='f.npy')", "f.npy", False),
    ("t = Path('f.txt').read_text()", "f.txt", False),
    ("t = pathlib.Path('f.txt').read_bytes()", "f.txt", False),
    ("def load():\n    return open('g.txt').read()\nt = load()", "g.txt", False),
    ("t = open('https://example.org/f.txt')", None, False),
    ("name = 'f.txt'\nt = open(name).read()", None, False),
    ("t = str(Path('f.txt'))", None, False),
    ("open('f.txt', 'w').write('x')", "f.txt", True),
    ("with open('f.txt', 'w') as fh:\n    fh.write('x')", "f.txt", True),
    ("open('f.txt', mode='a').write('x')", "f.txt", True),
    ("open('f.txt', 'r+').read()", "f.txt", True),
    ("pd.DataFrame({'a': [1]}).to_csv('f.csv')", "f.csv", True),
    ("df = pd.DataFrame({'a': [1]})\ndf.to_csv('f.csv')", "f.csv", True),
    ("np.save('f.npy', np.zeros(2))", "f.npy", True),
    ("Path('f.txt').write_text('x')", "f.txt", True),
    ("json.dump([1], open('f.json', 'w'))", "f.json", True),
]


def _edge_files(tmp_path, cells) -> set[str]:
    """Files the analysis sees one step write and a later step read (its file edges)."""
    pipeline = analyze(read_notebook(write_nb(tmp_path / "edges.ipynb", cells)), "edges.ipynb")
    return {f for e in pipeline.edges if e.kind is EdgeKind.file for f in e.variables}


@pytest.mark.parametrize(("snippet", "path", "writes"), FILE_SNIPPETS)
def test_the_analysis_and_the_cache_see_the_same_files(tmp_path, snippet, path, writes):
    for name in ("f.txt", "f.csv", "f.npy", "f.json", "g.txt"):
        (tmp_path / name).write_text("x")
    imports = _cell(IMPORTS, "imports")
    paths = ("f.txt", "f.csv", "f.npy", "f.json", "g.txt")
    if writes:
        # The analysis: the snippet's step writes the file a later step reads.
        reads = "\n".join(f"r{i} = open({p!r}).read()" for i, p in enumerate(paths))
        analysis = _edge_files(
            tmp_path, [imports, _cell(snippet, "step:a"), _cell(reads, "step:b")]
        )
        # The cache: a file the step writes before reading it is no input of the step.
        step_nb = _step_nbs(
            write_nb(tmp_path / "nb.ipynb", [imports, _cell(f"{snippet}\n{reads}", "step:a")])
        )["a"]
        cache = set(paths) - set(files_read(step_nb, tmp_path))
    else:
        writes_all = "\n".join(f"open({p!r}, 'w').write('x')" for p in paths)
        analysis = _edge_files(
            tmp_path, [imports, _cell(writes_all, "step:a"), _cell(snippet, "step:b")]
        )
        step_nb = _step_nbs(write_nb(tmp_path / "nb.ipynb", [imports, _cell(snippet, "step:a")]))[
            "a"
        ]
        cache = set(files_read(step_nb, tmp_path))
    expected = {path} if path else set()
    assert analysis == expected
    assert cache == expected


def test_pre_imports_are_not_part_of_the_step_code(tmp_path):
    path = write_nb(tmp_path / "nb.ipynb", CELLS)
    step_nb = dict(_step_nbs(path)["load"])
    warmed = add_preimports(step_nb)
    assert warmed != step_nb  # pre-warming did change the notebook it executes
    assert step_code(warmed) == step_code(step_nb)


@pytest.mark.kernel
def test_changed_data_file_reruns_its_step_and_prewarm_shares_the_cache(tmp_path):
    store = RunStore(tmp_path / "store" / "runs.sqlite")
    (tmp_path / "data").mkdir()
    csv = tmp_path / "data" / "in.csv"
    csv.write_text("a\n1\n2\n")
    path = write_nb(tmp_path / "nb.ipynb", CELLS)

    def states(**kw):
        run = LocalRunner(store, max_parallel=2, **kw).run(analyze_notebook(path), path)
        assert run.state is RunState.succeeded, run
        return {s.step: s.state for s in run.steps}

    ok, cached = RunState.succeeded, RunState.cached
    assert states(prewarm=False) == {"load": ok, "other": ok, "report": ok}
    # Pre-warming (which adds pre-imports to the step notebooks) hits the same entries.
    assert states(prewarm=True) == {"load": cached, "other": cached, "report": cached}
    csv.write_text("a\n1\n5\n")
    assert states() == {"load": ok, "other": cached, "report": ok}
    assert states(prewarm=False) == {"load": cached, "other": cached, "report": cached}
    # Nor does spawning kernels instead of forking them change a key.
    assert states(fork=False) == {"load": cached, "other": cached, "report": cached}


@pytest.mark.kernel
def test_a_cache_disabled_step_gets_no_key_and_its_files_are_not_hashed(tmp_path):
    from jupyter_pipeline.runners import cache as cache_module
    from jupyter_pipeline.runners.plan import plan_run

    store = RunStore(tmp_path / "store" / "runs.sqlite")
    for name in ("on.bin", "off.bin"):
        (tmp_path / name).write_bytes(name.encode() * 1000)
        os.utime(tmp_path / name, ns=(1, 1))  # old: a digest of it would be memoized
    path = write_nb(
        tmp_path / "nb.ipynb",
        [
            _cell("a = open('on.bin', 'rb').read(2)\nprint(a)", "step:kept"),
            _cell("b = open('off.bin', 'rb').read(2)\nprint(a, b)", "step:fresh", "cache:disabled"),
        ],
    )

    def hashed() -> set[str]:
        return {Path(memo[0]).name for memo in cache_module._DIGESTS}

    cache_module._DIGESTS.clear()
    pipeline = analyze_notebook(path)
    plan = {
        p.step: (p.action, p.reason) for p in plan_run(pipeline, read_notebook(path), path, store)
    }
    assert plan == {
        "kept": ("will run", "never run"),
        "fresh": ("will run", "cache off for this step"),
    }
    assert hashed() == {"on.bin"}

    cache_module._DIGESTS.clear()
    run = LocalRunner(store, prewarm=False).run(pipeline, path)
    assert run.state is RunState.succeeded, run
    assert hashed() == {"on.bin"}  # the cached step's file is part of its key; the other's not
    assert store.step_extra(run.id, "kept")["cache_key"]
    assert store.step_extra(run.id, "fresh")["cache_key"] is None
    again = LocalRunner(store, prewarm=False).run(pipeline, path)
    assert {s.step: s.state for s in again.steps} == {
        "kept": RunState.cached,
        "fresh": RunState.succeeded,
    }
