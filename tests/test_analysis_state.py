"""Global state (RNGs, settings), names in strings, star imports, files, parallel producers."""

from __future__ import annotations

import pytest
from helpers import diags, edges, io, run

# ----------------------------------------------------------------------------- RNG state


def test_numpy_seed_then_draws_chain_the_rng_state():
    p = run(
        ("import numpy as np\nnp.random.seed(0)", ["step:a"]),
        ("x = np.random.rand(3)", ["step:b"]),
        ("y = np.random.normal(size=2)", ["step:c"]),
        ("print(1)", ["step:d"]),
    )
    got = {s.name: (s.state_inputs, s.state_outputs, s.depends_on) for s in p.steps}
    assert got == {
        "a": ({}, ["numpy.random"], []),
        "b": ({"numpy.random": "a"}, ["numpy.random"], ["a"]),
        "c": ({"numpy.random": "b"}, [], ["b"]),
        "d": ({}, [], []),
    }
    assert edges(p) == [
        ("a", "b", "state", ["numpy.random"]),
        ("b", "c", "state", ["numpy.random"]),
    ]
    assert diags(p, include_info=True) == [("rng-state", "info", 0, 2)]


def test_unseeded_draws_carry_no_state():
    p = run(
        ("import numpy as np", ["step:a"]),
        ("x = np.random.rand(3)", ["step:b"]),
        ("y = np.random.rand(3)", ["step:c"]),
    )
    assert all(s.state_inputs == {} and s.state_outputs == [] for s in p.steps)
    assert p.edges == []


def test_random_seed_chains_the_random_module_state():
    p = run(
        ("import random\nrandom.seed(1)", ["step:a"]),
        ("v = random.random()", ["step:b"]),
        ("w = random.choice([1, 2])", ["step:c"]),
    )
    assert {s.name: s.state_inputs for s in p.steps} == {
        "a": {},
        "b": {"random": "a"},
        "c": {"random": "b"},
    }
    assert edges(p) == [("a", "b", "state", ["random"]), ("b", "c", "state", ["random"])]


def test_seed_in_the_imports_cell_has_no_producer_step():
    p = run(
        ("import numpy as np\nnp.random.seed(0)", ["imports"]),
        ("x = np.random.rand(2)", ["step:a"]),
        ("y = np.random.rand(2)", ["step:b"]),
    )
    assert {s.name: s.state_inputs for s in p.steps} == {"a": {}, "b": {"numpy.random": "a"}}
    assert p.step("a").state_outputs == ["numpy.random"]


def test_a_generator_object_is_data_not_global_state():
    p = run(
        ("import numpy as np\nnp.random.seed(0)\nrng = np.random.default_rng(0)", ["step:a"]),
        ("v = rng.random()", ["step:b"]),
    )
    assert io(p) == {"a": ([], ["rng"], []), "b": (["rng"], [], ["a"])}
    assert p.step("b").state_inputs == {}


def test_untracked_seed_warns():
    p = run(("import torch\ntorch.manual_seed(0)", ["step:a"]))
    assert diags(p) == [("global-state", "warning", 0, 2)]


# ----------------------------------------------------------------------------- global settings


def test_pandas_option_is_replayed_in_later_steps_with_its_import():
    p = run(
        ("import pandas as pd\npd.set_option('display.max_rows', 5)", ["step:a"]),
        ("df = pd.DataFrame({'a': [1]})", ["step:b"]),
        ("print(df)", ["step:c"]),
    )
    replay = [
        ("import", ["pd"], "import pandas as pd"),
        ("state", [], "pd.set_option('display.max_rows', 5)"),
    ]
    for name in ("b", "c"):
        assert [(d.kind.value, d.names, d.source) for d in p.step(name).definitions] == replay
    assert p.step("a").definitions == []
    assert io(p) == {"a": ([], [], []), "b": ([], ["df"], []), "c": (["df"], [], ["b"])}
    assert diags(p, include_info=True) == [("global-state", "info", 0, 2)]


def test_chdir_and_sys_path_are_replayed():
    p = run(
        ("import os, sys\nos.chdir('/tmp')\nsys.path.append('lib')", ["step:a"]),
        ("n = 1", ["step:b"]),
    )
    assert [d.source for d in p.step("b").definitions] == [
        "import os, sys",
        "os.chdir('/tmp')",
        "sys.path.append('lib')",
    ]
    assert diags(p, include_info=True) == [
        ("global-state", "info", 0, 2),
        ("global-state", "info", 0, 3),
    ]


def test_assignment_into_module_state_right_after_the_import_is_replayed():
    p = run(
        ("import os\nos.environ['MODE'] = 'fast'", ["step:a"]),
        ("import os\nmode = os.environ['MODE']", ["step:b"]),
    )
    assert [(d.kind.value, d.source) for d in p.step("b").definitions] == [
        ("import", "import os"),
        ("state", "os.environ['MODE'] = 'fast'"),
    ]
    assert diags(p, include_info=True) == [("global-state", "info", 0, 2)]


def test_state_setting_inside_an_if_warns_and_is_not_replayed():
    p = run(
        ("import pandas as pd\nif True:\n    pd.set_option('display.max_rows', 5)", ["step:a"]),
        ("df = pd.DataFrame()", ["step:b"]),
    )
    assert [d.kind.value for d in p.step("b").definitions] == ["import"]
    assert diags(p) == [("global-state", "warning", 0, 3)]


def test_reading_sys_path_is_not_a_setting():
    p = run(("import sys\nn = sys.path.index('x') if 'x' in sys.path else 0", ["step:a"]))
    assert diags(p, include_info=True) == []


# ----------------------------------------------------------------------------- names in strings


def test_query_at_reference_is_an_input_with_a_warning():
    p = run(
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1, 5]})\nt = 2", ["step:a"]),
        ("sub = df.query('a > @t')", ["step:b"]),
    )
    assert io(p) == {"a": ([], ["df", "t"], []), "b": (["df", "t"], [], ["a"])}
    assert diags(p) == [("name-in-string", "warning", 1, 1)]
    assert p.diagnostics[0].names == ["t"]


def test_eval_of_a_literal_string_reads_its_names():
    p = run(("x = 1", ["step:a"]), ("y = eval('x + 1')", ["step:b"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"])}
    assert diags(p) == [("name-in-string", "warning", 1, 1)]


def test_eval_of_a_variable_is_dynamic_code():
    p = run(("code = 'x'", ["step:a"]), ("y = eval(code)\ng = globals()", ["step:b"]))
    assert io(p) == {"a": ([], ["code"], []), "b": (["code"], [], ["a"])}
    assert diags(p) == [("dynamic-code", "warning", 1, 1), ("dynamic-code", "warning", 1, 2)]


# ----------------------------------------------------------------------------- star imports


def test_resolvable_star_import_is_replayed_where_used():
    p = run(("from math import *", ["step:a"]), ("r = sqrt(4) + pi", ["step:b"]))
    assert io(p) == {"a": ([], [], []), "b": ([], [], [])}
    assert [(d.kind.value, d.source) for d in p.step("b").definitions] == [
        ("import", "from math import *")
    ]
    assert diags(p) == [("star-import", "warning", 0, 1)]


def test_unresolvable_star_import_turns_errors_into_warnings():
    p = run(("from nosuchmodule_xyz import *", ["step:a"]), ("r = thing(1)", ["step:b"]))
    assert diags(p) == [("star-import", "warning", 0, 1), ("maybe-undefined", "warning", 1, 1)]
    assert p.errors == []


def test_names_before_an_unresolvable_star_import_are_still_errors():
    p = run(("print(early)", ["step:a"]), ("from nosuchmodule_xyz import *", ["step:b"]))
    assert diags(p) == [("undefined-name", "error", 0, 1), ("star-import", "warning", 1, 1)]


# ----------------------------------------------------------------------------- files


def test_file_written_in_one_step_and_read_in_another():
    p = run(
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1]})\ndf.to_csv('out.csv')", ["step:a"]),
        ("import pandas as pd\nd2 = pd.read_csv('out.csv')", ["step:b"]),
    )
    assert io(p) == {"a": ([], [], []), "b": ([], [], ["a"])}
    assert edges(p) == [("a", "b", "file", ["out.csv"])]
    assert p.edges[0].reason == "out.csv: written in a (cell 0), read in b (cell 1, line 2)"
    assert diags(p) == [("file-handoff", "warning", 1, 2)]


@pytest.mark.parametrize(
    ("write", "read", "path"),
    [
        (
            "import pandas as pd\nd = {'a': [1]}\npd.DataFrame(d).to_csv('out.csv')",
            "import pandas as pd\ndf = pd.read_csv('out.csv')",
            "out.csv",
        ),
        (
            "from pathlib import Path\nPath('x.txt').write_text('hi')",
            "from pathlib import Path\nt = Path('x.txt').read_text()",
            "x.txt",
        ),
        (
            "import pathlib\npathlib.Path('b.bin').write_bytes(b'1')",
            "with open('b.bin', 'rb') as f:\n    t = f.read()",
            "b.bin",
        ),
        (
            "import matplotlib.pyplot as plt\nplt.plot([1])\nplt.gcf().savefig('p.png')",
            "import matplotlib.image as mpimg\nimg = mpimg.imread('p.png')",
            "p.png",
        ),
        (
            "import pandas as pd\ns = pd.Series([1])\ns.plot().get_figure().savefig('s.png')",
            "from pathlib import Path\nb = Path('s.png').read_bytes()",
            "s.png",
        ),
    ],
)
def test_file_written_through_a_method_of_a_temporary(write, read, path):
    # The receiver is a call's result, not a name: the write is seen all the same.
    p = run((write, ["step:a"]), (read, ["step:b"]))
    assert edges(p) == [("a", "b", "file", [path])]
    assert [(code, cell) for code, _, cell, _ in diags(p)] == [("file-handoff", 1)]


def test_path_methods_on_a_computed_path_are_not_guessed():
    p = run(
        ("from pathlib import Path\nname = 'x.txt'\nPath(name).write_text('hi')", ["step:a"]),
        ("from pathlib import Path\nt = Path('x.txt').read_text()", ["step:b"]),
    )
    assert [e for e in edges(p) if e[2] == "file"] == []


def test_file_written_and_read_in_the_same_step_is_fine():
    p = run(
        (
            "with open('t.txt', 'w') as f:\n    f.write('x')\n"
            "with open('t.txt') as f:\n    s = f.read()",
            ["step:a"],
        )
    )
    assert p.edges == [] and diags(p) == []


def test_two_unordered_steps_writing_the_same_file():
    p = run(
        ("with open('log.txt', 'w') as f:\n    f.write('a')", ["step:a"]),
        ("with open('log.txt', 'w') as f:\n    f.write('b')", ["step:b"]),
    )
    assert diags(p) == [("file-conflict", "warning", 1, 1)]


def test_two_ordered_steps_writing_the_same_file_is_fine():
    p = run(
        ("with open('log.txt', 'w') as f:\n    f.write('a')", ["step:a"]),
        ("with open('log.txt', 'w') as f:\n    f.write('b')", ["step:b", "prev:a"]),
    )
    assert diags(p) == []


# ----------------------------------------------------------------------------- parallel producers


def test_parallel_producers_warn():
    p = run(
        ("x = 1\nu = 0", ["step:a"]),
        ("x = 2", ["step:b"]),
        ("print(x, u)", ["step:c"]),
    )
    assert io(p) == {"a": ([], ["u"], []), "b": ([], ["x"], []), "c": (["u", "x"], [], ["a", "b"])}
    assert p.step("c").input_sources == {"u": "a", "x": "b"}
    assert diags(p) == [("parallel-producers", "warning", 2, 1)]
    assert p.diagnostics[0].names == ["x"]


def test_ordered_producers_do_not_warn():
    p = run(("x = 1\nu = 0", ["step:a"]), ("x = u + 2", ["step:b"]), ("print(x, u)", ["step:c"]))
    assert p.step("c").input_sources == {"u": "a", "x": "b"}
    assert diags(p) == []
