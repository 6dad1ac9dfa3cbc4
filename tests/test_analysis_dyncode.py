"""Code evaluated inside notebook functions and classes, carried to their call sites.

``def show(name): return eval(name)`` reads whatever its argument names, when it is called:
a string literal passed to it is code written at the call site.
"""

from __future__ import annotations

from helpers import diags, io, run

DISPLAY = """\
class display:
    def __init__(self, *names):
        self.names = names
    def __repr__(self):
        return "\\n".join(repr(eval(n)) for n in self.names)"""


def _reasons(p):  # type: ignore[no-untyped-def]
    return {(e.source, e.target): e.reason for e in p.edges}


def test_class_evaluating_constructor_arguments_reads_the_literals_names():
    p = run((DISPLAY, ["step:a"]), ("x = 42", ["step:b"]), ("display('x')", ["step:c"]))
    assert io(p)["c"] == (["x"], [], ["b"])
    assert _reasons(p)[("b", "c")] == (
        "x: read in c (cell 2, line 1), as code by display() (defined in cell 0), "
        "last changed in b (cell 1, line 1)"
    )
    assert diags(p) == [("name-in-string", "warning", 2, 1)]
    assert p.diagnostics[0].names == ["x"]
    assert "display() (defined in cell 0)" in p.diagnostics[0].message


def test_function_evaluating_its_parameter_reads_every_name_of_the_literal():
    p = run(
        ("def show(name):\n    return eval(name)", ["step:a"]),
        ("x = 1\ny = 2", ["step:b"]),
        ("show('x + y')\nshow(name='y')", ["step:c"]),
    )
    assert io(p)["c"] == (["x", "y"], [], ["b"])
    reason = _reasons(p)[("b", "c")]
    assert "x: read in c (cell 2, line 1), as code by show() (defined in cell 0)" in reason
    assert "y: read in c (cell 2, line 1), as code by show() (defined in cell 0)" in reason


def test_non_literal_argument_is_dynamic_code_at_the_call_site():
    p = run(
        (DISPLAY, ["step:a"]),
        ("x = 42\nwhich = 'x'", ["step:b"]),
        ("print(1)\ndisplay(which)", ["step:c"]),
    )
    assert io(p)["c"] == (["which"], [], ["b"])
    assert diags(p) == [("dynamic-code", "warning", 2, 2)]
    message = p.diagnostics[0].message
    assert "display() (defined in cell 0) evaluates its argument 'names'" in message


def test_code_built_from_an_argument_is_dynamic_code_not_a_guess():
    p = run(
        ("def total(c):\n    return eval(c + '.sum()')", ["step:a"]),
        ("import pandas as pd\ndf = pd.DataFrame({'a': [1]})", ["step:b"]),
        ("total('df')", ["step:c"]),
    )
    # The code run is 'df.sum()', not 'df': no guess, a warning at the call instead.
    assert io(p)["c"] == ([], [], [])
    assert diags(p) == [("dynamic-code", "warning", 2, 1)]
    assert "built from it" in p.diagnostics[0].message


def test_instance_displayed_in_a_later_step_reads_the_names_there():
    p = run(
        (DISPLAY, ["step:a"]),
        ("x = 1", ["step:b"]),
        ("d = display('x')", ["step:c"]),
        ("x = 2", ["step:d"]),
        ("d", ["step:e"]),
    )
    # Displaying d evaluates 'x' in step e: it needs the x of step d, as the notebook shows 2.
    assert io(p)["e"] == (["d", "x"], [], ["c", "d"])
    assert (
        "x: read in e (cell 4, line 1), as code by display() (defined in cell 0)"
        in (_reasons(p)[("d", "e")])
    )


def test_globals_lookup_and_assignment_by_name():
    p = run(
        (
            "def get(name):\n    return globals()[name]\n"
            "def put(name, value):\n    globals()[name] = value",
            ["step:a"],
        ),
        ("x = 1", ["step:b"]),
        ("put('y', get('x'))", ["step:c"]),
        ("print(y)", ["step:d"]),
    )
    assert io(p)["c"] == (["x"], ["y"], ["b"])
    assert io(p)["d"] == (["y"], [], ["c"])


def test_exec_in_the_notebook_globals_binds_what_the_literal_assigns():
    p = run(
        ("def run_code(code):\n    exec(code, globals())", ["step:a"]),
        ("x = 1", ["step:b"]),
        ("run_code('z = x + 1')", ["step:c"]),
        ("print(z)", ["step:d"]),
    )
    assert io(p)["c"] == (["x"], ["z"], ["b"])
    assert io(p)["d"] == (["z"], [], ["c"])


def test_method_evaluating_its_parameter_through_an_instance():
    p = run(
        ("class Env:\n    def get(self, name):\n        return eval(name)", ["step:a"]),
        ("x = 1\ne = Env()", ["step:b"]),
        ("e.get('x')", ["step:c"]),
    )
    assert io(p)["c"] == (["e", "x"], [], ["b"])


def test_eval_of_a_literal_inside_a_function_reads_its_names_at_calls():
    p = run(
        ("def total():\n    return eval('x + 1')", ["step:a"]),
        ("x = 1", ["step:b"]),
        ("total()", ["step:c"]),
    )
    assert io(p)["c"] == (["x"], [], ["b"])
    assert diags(p) == []


def test_function_running_unseen_code_warns_at_each_call():
    p = run(
        ("def dump():\n    for k, v in globals().items():\n        print(k)", ["step:a"]),
        ("dump()", ["step:b"]),
    )
    assert diags(p) == [("dynamic-code", "warning", 1, 1)]
    assert "dump() (defined in cell 0) uses globals()" in p.diagnostics[0].message


def test_eval_in_a_namespace_of_its_own_reads_nothing_of_the_notebook():
    p = run(
        (
            "def calc(expr, env):\n    return eval(expr, env)\n"
            "def total():\n    return eval('a + b', {'a': 1, 'b': 2})",
            ["step:a"],
        ),
        ("calc('a * b', {'a': 2, 'b': 3})\ntotal()", ["step:b"]),
    )
    assert io(p)["b"] == ([], [], [])
    assert diags(p) == []


def test_function_that_only_uses_its_argument_as_data_is_unaffected():
    p = run(
        ("def shout(s):\n    return s.upper() + '!'", ["step:a"]),
        ("shout('x')", ["step:b"]),
    )
    assert io(p)["b"] == ([], [], [])
    assert diags(p) == []
