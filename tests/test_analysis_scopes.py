"""IPython syntax and Python scopes: which names a cell really reads, binds and deletes."""

from __future__ import annotations

from helpers import diags, edges, io, run

# ----------------------------------------------------------------------------- IPython syntax


def test_matplotlib_inline_is_state_not_a_syntax_error():
    p = run(
        ("%matplotlib inline\nimport numpy as np\nx = np.arange(3)", ["step:a"]),
        ("print(x)", ["step:b"]),
    )
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"])}
    assert [(d.kind.value, d.source) for d in p.step("b").definitions] == [
        ("state", "get_ipython().run_line_magic('matplotlib', 'inline')")
    ]
    assert diags(p, include_info=True) == [("global-state", "info", 0, 1)]


def test_shell_lines_and_captured_shell_output():
    p = run(("!ls\nfiles = !ls\nx = len(files)", ["step:a"]), ("print(x, files)", ["step:b"]))
    assert io(p) == {"a": ([], ["files", "x"], []), "b": (["files", "x"], [], ["a"])}
    assert diags(p, include_info=True) == []


def test_shell_install_is_info():
    p = run(("!pip install numpy\nx = 1", ["step:a"]))
    assert diags(p, include_info=True) == [("shell-install", "info", 0, 1)]


def test_capture_cell_magic_binds_its_variable_and_runs_the_body():
    p = run(("%%capture out\nprint(1)\nz = 5", ["step:a"]), ("print(out.stdout, z)", ["step:b"]))
    assert io(p) == {"a": ([], ["out", "z"], []), "b": (["out", "z"], [], ["a"])}
    assert diags(p) == []


def test_time_line_magic_argument_is_code():
    p = run(
        ("def f(a):\n    return a + 1\nx = 1", ["step:a"]),
        ("%time y = f(x)", ["step:b"]),
        ("print(y)", ["step:c"]),
    )
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], ["y"], ["a"]), "c": (["y"], [], ["b"])}
    assert [d.names for d in p.step("b").definitions] == [["f"]]
    assert edges(p) == [("a", "b", "data", ["x"]), ("b", "c", "data", ["y"])]


def test_timeit_reads_its_names():
    p = run(("x = [3, 1, 2]", ["step:a"]), ("%timeit -n 2 sorted(x)", ["step:b"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"])}
    assert diags(p) == []


def test_time_cell_magic_body_is_analyzed():
    p = run(("x = 1", ["step:a"]), ("%%time\ny = x + 1", ["step:b"]), ("print(y)", ["step:c"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], ["y"], ["a"]), "c": (["y"], [], ["b"])}


def test_question_mark_help_reads_the_name():
    p = run(("x = 1", ["step:a"]), ("x?", ["step:b"]), ("undefined_thing?", ["step:c"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"]), "c": ([], [], [])}
    assert diags(p) == []


def test_bash_cell_body_is_ignored():
    p = run(
        ("x = 1", ["step:a"]),
        ("%%bash\necho $undefined_thing\nfoo bar baz", ["step:b"]),
        ("print(x)", ["step:c"]),
    )
    assert io(p) == {"a": ([], ["x"], []), "b": ([], [], []), "c": (["x"], [], ["a"])}
    assert diags(p) == []


def test_writefile_cell_writes_a_file_read_by_a_later_step():
    p = run(
        ("%%writefile data.txt\nhello", ["step:a"]),
        ("with open('data.txt') as f:\n    t = f.read()", ["step:b"]),
    )
    assert io(p) == {"a": ([], [], []), "b": ([], [], ["a"])}
    assert edges(p) == [("a", "b", "file", ["data.txt"])]
    assert diags(p) == [("file-handoff", "warning", 1, 1)]


def test_opaque_magic_turns_undefined_errors_into_warnings():
    p = run(("%run other.py", ["step:a"]), ("print(thing)", ["step:b"]))
    assert diags(p) == [("opaque-magic", "warning", 0, 1), ("maybe-undefined", "warning", 1, 1)]


def test_indented_cell_and_top_level_await_are_valid_notebook_code():
    p = run("  x = 1\n  y = x", ("import asyncio\nawait asyncio.sleep(0)", ["step:b"]))
    assert [s.name for s in p.steps] == ["preamble", "b"]
    assert diags(p) == []


# ----------------------------------------------------------------------------- scopes


def test_comprehension_variable_does_not_leak():
    p = run(("i = 10\nsq = [i * i for i in range(3)]", ["step:a"]), ("print(i, sq)", ["step:b"]))
    assert io(p) == {"a": ([], ["i", "sq"], []), "b": (["i", "sq"], [], ["a"])}
    assert diags(p) == []


def test_comprehension_variable_is_not_an_input():
    p = run(("data = [1, 2]", ["step:a"]), ("sq = {k: k * 2 for k in data if k}", ["step:b"]))
    assert io(p) == {"a": ([], ["data"], []), "b": (["data"], [], ["a"])}


def test_comprehension_variable_read_later_is_undefined():
    p = run(("sq = [k for k in range(3)]", ["step:a"]), ("print(k)", ["step:b"]))
    assert diags(p) == [("undefined-name", "error", 1, 1)]


def test_lambda_assignment_is_a_definition_replayed_where_called():
    p = run(
        ("k = 2", ["step:a"]),
        ("f = lambda v: v * k\ng = lambda q: q", ["step:b"]),
        ("print(f(1), g(2))", ["step:c"]),
    )
    # Parameters are local; the free `k` is read where f is called, like a def.
    assert io(p) == {"a": ([], ["k"], []), "b": ([], [], []), "c": (["k"], [], ["a"])}
    assert [(d.kind.value, d.names, d.source) for d in p.step("c").definitions] == [
        ("function", ["f"], "f = lambda v: v * k"),
        ("function", ["g"], "g = lambda q: q"),
    ]
    assert diags(p) == []


def test_lambda_sees_globals_changed_after_it_was_made():
    p = run(
        ("x = [7, 8]\ng = lambda: len(x)", ["step:a"]),
        ("x.append(0)", ["step:b"]),
        ("print(g())", ["step:c"]),  # 3 in the notebook
    )
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], ["x"], ["a"]), "c": (["x"], [], ["b"])}


def test_lambda_used_inline_reads_where_written():
    p = run(("k = 2\nv = [1]", ["step:a"]), ("w = sorted(v, key=lambda e: e * k)", ["step:b"]))
    assert io(p) == {"a": ([], ["k", "v"], []), "b": (["k", "v"], [], ["a"])}


def test_function_locals_do_not_leak():
    p = run(
        ("def f():\n    inner = 1\n    return inner\nr = f()", ["step:a"]),
        ("print(inner)", ["step:b"]),
    )
    assert io(p) == {"a": ([], [], []), "b": ([], [], [])}
    assert diags(p) == [("undefined-name", "error", 1, 1)]


def test_async_function_locals_do_not_leak():
    p = run(("async def g():\n    tmp = 1\n    return tmp", ["step:a"]), ("print(tmp)", ["step:b"]))
    assert diags(p) == [("undefined-name", "error", 1, 1)]


def test_class_body_names_do_not_leak():
    p = run(
        ("class C:\n    attr = 1\n    def m(self):\n        return self.attr", ["step:a"]),
        ("print(attr)", ["step:b"]),
    )
    assert diags(p) == [("undefined-name", "error", 1, 1)]


def test_walrus_binds_in_the_enclosing_scope():
    p = run(("if (n := 10) > 5:\n    pass", ["step:a"]), ("print(n)", ["step:b"]))
    assert io(p) == {"a": ([], ["n"], []), "b": (["n"], [], ["a"])}
    assert diags(p) == []


def test_walrus_inside_comprehension_binds_the_global():
    p = run(
        ("vals = [last := v * 2 for v in range(3)]", ["step:a"]), ("print(last, vals)", ["step:b"])
    )
    assert io(p) == {"a": ([], ["last", "vals"], []), "b": (["last", "vals"], [], ["a"])}
    # Bound only when the comprehension iterates at least once.
    assert diags(p) == [("conditional-definition", "warning", 1, 1)]


def test_with_and_import_as_bind_for_target_is_conditional():
    p = run(
        (
            "for i in range(3):\n    pass\n"
            "with open('f.txt', 'w') as fh:\n    fh.write('a')\n"
            "import numpy as np",
            ["step:a"],
        ),
        ("print(i, fh.closed, np.pi)", ["step:b"]),
    )
    assert io(p) == {"a": ([], ["fh", "i"], []), "b": (["fh", "i"], [], ["a"])}
    assert [(d.kind.value, d.names) for d in p.step("b").definitions] == [("import", ["np"])]
    # `for` over an empty iterable never binds its target.
    assert diags(p) == [("conditional-definition", "warning", 1, 1)]


def test_del_removes_the_name():
    p = run(("x = 1", ["step:a"]), ("del x", ["step:b"]), ("print(x)", ["step:c"]))
    # `del x` needs x in its own kernel, so b loads it.
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], [], ["a"]), "c": ([], [], [])}
    assert diags(p) == [("deleted-name", "error", 2, 1)]


def test_read_after_del_in_the_same_cell():
    p = run(("x = 1\ndel x\nprint(x)", ["step:a"]))
    assert diags(p) == [("deleted-name", "error", 0, 3)]


def test_del_then_rebind():
    p = run(("x = 1", ["step:a"]), ("del x\nx = 2", ["step:b"]), ("print(x)", ["step:c"]))
    assert io(p) == {"a": ([], ["x"], []), "b": (["x"], ["x"], ["a"]), "c": (["x"], [], ["b"])}
    assert diags(p) == []


def test_except_as_name_is_deleted_after_the_handler():
    p = run(
        ("try:\n    1 / 0\nexcept ZeroDivisionError as err:\n    msg = str(err)", ["step:a"]),
        ("print(msg)\nprint(err)", ["step:b"]),
    )
    assert io(p) == {"a": ([], ["msg"], []), "b": (["msg"], [], ["a"])}
    assert diags(p) == [
        ("conditional-definition", "warning", 1, 1),
        ("deleted-name", "error", 1, 2),
    ]


def test_except_as_name_in_the_same_cell():
    p = run(("try:\n    1 / 0\nexcept ZeroDivisionError as err:\n    pass\nprint(err)", ["step:a"]))
    assert diags(p) == [("deleted-name", "error", 0, 5)]


def test_except_as_keeps_an_earlier_value_when_the_handler_may_not_run():
    p = run(
        ("err = 5", ["step:a"]),
        ("try:\n    pass\nexcept ValueError as err:\n    pass", ["step:b"]),
        ("print(err)", ["step:c"]),
    )
    assert io(p) == {
        "a": ([], ["err"], []),
        "b": (["err"], ["err"], ["a"]),
        "c": (["err"], [], ["b"]),
    }


def test_match_statement_captures_bind_per_case():
    p = run(
        ("cmd = ('go', 3)", ["step:a"]),
        (
            "match cmd:\n    case ('go', dist):\n        moved = dist\n"
            "    case _:\n        moved = 0",
            ["step:b"],
        ),
        ("print(moved)\nprint(dist)", ["step:c"]),
    )
    assert io(p) == {
        "a": ([], ["cmd"], []),
        "b": (["cmd"], ["dist", "moved"], ["a"]),
        "c": (["dist", "moved"], [], ["b"]),
    }
    # `case _:` always matches, so `moved` is surely bound; `dist` only in the first case.
    assert diags(p) == [("conditional-definition", "warning", 2, 2)]


def test_match_without_irrefutable_case_binds_conditionally():
    p = run(
        ("cmd = 1", ["step:a"]),
        ("match cmd:\n    case 1:\n        moved = 1\n    case 2:\n        moved = 2", ["step:b"]),
        ("print(moved)", ["step:c"]),
    )
    assert io(p) == {
        "a": ([], ["cmd"], []),
        "b": (["cmd"], ["moved"], ["a"]),
        "c": (["moved"], [], ["b"]),
    }
    assert diags(p) == [("conditional-definition", "warning", 2, 1)]


def test_global_statement_in_function_rebinds_the_global():
    p = run(
        ("count = 0\ndef bump():\n    global count\n    count += 1", ["step:a"]),
        ("bump()", ["step:b"]),
        ("print(count)", ["step:c"]),
    )
    assert io(p) == {
        "a": ([], ["count"], []),
        "b": (["count"], ["count"], ["a"]),
        "c": (["count"], [], ["b"]),
    }
    assert diags(p) == []


def test_nested_function_and_nonlocal_do_not_touch_globals():
    src = (
        "def outer():\n    total = 0\n    def inner():\n        nonlocal total\n"
        "        total += 1\n    inner()\n    return total\nr = outer()"
    )
    p = run((src, ["step:a"]), ("print(r)", ["step:b"]))
    assert io(p) == {"a": ([], ["r"], []), "b": (["r"], [], ["a"])}
    assert diags(p) == []


def test_builtins_and_kernel_names_are_not_inputs():
    p = run(("x = len([1]) + abs(-1)\ndisplay(x)\nprint(__name__)", ["step:a"]))
    assert io(p) == {"a": ([], [], [])}
    assert diags(p) == []


def test_augmented_assignment_reads_and_changes():
    p = run(("n = 1", ["step:a"]), ("n += 1", ["step:b"]), ("print(n)", ["step:c"]))
    assert io(p) == {"a": ([], ["n"], []), "b": (["n"], ["n"], ["a"]), "c": (["n"], [], ["b"])}
