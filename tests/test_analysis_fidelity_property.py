"""Property test against the one promise: the pipeline prints what the notebook prints.

Generated programs are well-typed (lists, ints, functions, objects; IPython lines too) so they
run without error. Each is run twice in-process: straight through in one namespace, and as the
analyzed pipeline — every step in a fresh ``__main__`` that gets only its parameters, its
replayed definitions, and its inputs and RNG states, saved and loaded by the runtime's own
``save_outputs``/``load_inputs``. Whenever the analysis reports nothing doubtful (no error or
warning), every cell must print the same text.

Notebooks are cut by step tags, one step per cell, or by markdown headings.
``HYPOTHESIS_PROFILE=ci`` runs 800 examples, the default 150.
"""

from __future__ import annotations

import contextlib
import io
import os
import random as random_module
import sys
import tempfile
import types
from random import Random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nbformat import v4

from jupyter_pipeline.analysis import analyze
from jupyter_pipeline.model import Pipeline
from jupyter_pipeline.runtime.kernel import STATE_PREFIX, load_inputs, save_outputs
from jupyter_pipeline.runtime.serializers import value_dirname

# Explicit settings (not a second registration of the shared profiles, which would override
# test_analysis_property's): 800 examples under HYPOTHESIS_PROFILE=ci, 150 otherwise.
_SETTINGS = settings(
    max_examples=800 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Cases the pipeline still gets wrong, generated only with JP_FIDELITY_GAPS=1: a function
# redefined under a condition while an imports/functions cell defines the same name (the
# consumer resolves the loaded function by name to its own replayed one), and random draws in
# the untagged cells Kale adds to an imports/functions block (replayed unseeded per step), and
# a numpy view (`view = arr[1:3]`) not travelling with its base when a later step writes it.
KNOWN_GAPS = os.environ.get("JP_FIDELITY_GAPS") == "1"

LISTS = ["x", "y", "z"]
INTS = ["n", "m"]
FUNCS = ["f", "g", "h"]


class _Gen:
    """Builds statements that only use names bound (with the right type) at that point."""

    def __init__(self, r: Random):
        self.r = r
        self.lists: set[str] = set()
        self.ints: set[str] = set()
        self.funcs: dict[str, tuple[str, set[str]]] = {}  # name -> (kind, globals it needs)
        self.seeded = False
        self.names: set[str] = set()  # other bound names (d, c, k)
        self.names_need: dict[str, set[str]] = {}
        self.role_funcs: set[str] = set()  # defined by a functions cell

    def _callable(self) -> list[str]:
        have = self.lists | self.ints
        return sorted(f for f, (_, need) in self.funcs.items() if need <= have)

    def statement(self) -> str:
        r = self.r
        k = r.randrange(10)
        options = ["new_list"]
        if self.lists:
            options += ["copy", "append", "iadd", "setitem", "len", "print", "comp", "loop"]
            options += ["def_mut", "def_global_list", "def_pure", "if_else", "if_only", "try"]
            options += ["walrus", "del_list", "lambda", "sort", "rebind_cond"]
            options += ["random_append"] * self.seeded  # unseeded draws differ run to run
        if self.ints:
            options += ["int_add", "int_iadd", "def_global_int", "print_int"]
        if self._callable():
            options += ["call", "call", "call"]
        options += ["dict_new"] if "d" not in self.names else ["dict_set", "dict_print"]
        options += ["class_new"] if "c" not in self.names else ["obj_inc", "obj_print"]
        if len(self.lists) >= 2:
            options += ["swap"]
        if self.lists:
            options += ["magic_time_bind", "magic_time_mutate", "capture"]
        options += ["shell_out"]
        if "cap" in self.names:
            options += ["print_cap"]
        if self.lists:
            options += ["cond_def", "try_def", "class_reads_global", "alias", "nest"]
            if "d" in self.names:
                options += ["dict_hold"]
        options += ["np_new"] if "arr" not in self.names else ["np_write", "np_print"]
        if "arr" in self.names and KNOWN_GAPS:
            options += ["np_view"]
        if "arr" in self.names and self.seeded:
            options += ["np_draw"]
        if "k" in self.names and self.names_need.get("k", set()) <= self.lists:
            options += ["method_call"]
        kind = r.choice(options)
        v = r.choice(LISTS)
        L = r.choice(sorted(self.lists)) if self.lists else None
        i = r.choice(sorted(self.ints)) if self.ints else None
        fname = r.choice(FUNCS)
        if kind == "dict_new":
            self.names.add("d")
            return f"d = {{'a': [{k}]}}"
        if kind == "dict_set":
            return f"d['k{k}'] = {k}" if not self.lists else f"d['k{k}'] = len({L})"
        if kind == "dict_print":
            return "print(sorted(d))"
        if kind == "class_new":
            self.names.add("c")
            return (
                "class Counter:\n    def __init__(self):\n        self.n = 0\n"
                "    def inc(self, by=1):\n        self.n += by\nc = Counter()"
            )
        if kind == "obj_inc":
            return f"c.inc({k})"
        if kind == "obj_print":
            return "print(c.n)"
        if kind in ("cond_def", "try_def") and not KNOWN_GAPS:
            fname = r.choice([f for f in FUNCS if f not in self.role_funcs])
        if kind == "cond_def":
            self._bind_func(fname, "noarg", {L})
            return f"if len({L}) > 0:\n    def {fname}():\n        return len({L})"
        if kind == "try_def":
            self._bind_func(fname, "noarg", {L})
            return f"try:\n    def {fname}():\n        return sum({L})\nexcept Exception:\n    pass"
        if kind == "class_reads_global":
            self.names.add("k")
            self.names_need["k"] = {L}
            return f"class Reader:\n    def get(self):\n        return len({L})\nk = Reader()"
        if kind == "method_call":
            return "print(k.get())"
        if kind == "magic_time_bind":
            name = r.choice(INTS)
            self._bind_int(name)
            return f"%time {name} = len({L})"
        if kind == "magic_time_mutate":
            return f"%time {L}.append({k})"
        if kind == "capture":
            self.names.add("cap")
            return f"%%capture cap\nprint({L})\n{L}.append({k})"
        if kind == "print_cap":
            return "print(cap)"
        if kind == "shell_out":
            self._bind_list(v)
            return f"{v} = !echo {k}"
        if kind == "alias":
            self._bind_list(v)
            return f"{v} = {L}"
        if kind == "nest":
            self._bind_list(v)
            return f"{v} = [{L}, {L}]" if v != L else f"{v} = [{L}]"
        if kind == "dict_hold":
            return f"d['held'] = {L}"
        if kind == "np_new":
            self.names.add("arr")
            return "import numpy as np\narr = np.arange(4)"
        if kind == "np_view":
            self.names.add("view")
            return "view = arr[1:3]"
        if kind == "np_write":
            return (
                f"arr[1] = {k}" if "view" not in self.names or r.randrange(2) else f"view[0] = {k}"
            )
        if kind == "np_print":
            return "print(arr)" if "view" not in self.names or r.randrange(2) else "print(view)"
        if kind == "np_draw":
            return "arr = arr + np.random.randint(0, 100, size=4)"
        if kind == "swap":
            a, b = r.sample(sorted(self.lists), 2)
            return f"{a}, {b} = {b}, {a}"
        if kind == "new_list":
            self._bind_list(v)
            return f"{v} = [{k}, {r.randrange(10)}]"
        if kind == "copy":
            self._bind_list(v)
            return f"{v} = list({L})"
        if kind == "append":
            return f"{L}.append({k})"
        if kind == "iadd":
            return f"{L} += [{k}]"
        if kind == "setitem":
            return f"{L}[0] = {k}"
        if kind == "sort":
            return f"{L}.sort()"
        if kind == "len":
            name = r.choice(INTS)
            self._bind_int(name)
            return f"{name} = len({L})"
        if kind == "print":
            return f"print({L})"
        if kind == "print_int":
            return f"print({i})"
        if kind == "comp":
            self._bind_list(v)
            return f"{v} = [e * 2 for e in {L}]"
        if kind == "loop":
            return f"for e in range(2):\n    {L}.append(e)"
        if kind == "if_else":
            self._bind_list(v)
            return f"if len({L}) > {k}:\n    {v} = [1]\nelse:\n    {v} = [2]"
        if kind == "if_only":
            return f"if len({L}) > {k}:\n    {L}.append(7)"
        if kind == "rebind_cond":
            # Rebinds L only sometimes: L is still a list afterwards either way.
            return f"if len({L}) > {k}:\n    {L} = [{k}]"
        if kind == "try":
            return f"try:\n    {L}.append(1)\nexcept Exception as err:\n    pass"
        if kind == "walrus":
            name = r.choice(INTS)
            self._bind_int(name)
            return f"if ({name} := len({L})) > 100:\n    pass"
        if kind == "random_append":
            return f"{L}.append(random.randint(0, 1000))"
        if kind == "del_list":
            self.lists.discard(L)
            return f"del {L}"
        if kind == "int_add":
            name = r.choice(INTS)
            src = i
            self._bind_int(name)
            return f"{name} = {src} + {k}"
        if kind == "int_iadd":
            return f"{i} += 1"
        if kind == "def_mut":
            self._bind_func(fname, "mut", set())
            return f"def {fname}(lst):\n    lst.append({k})"
        if kind == "def_pure":
            self._bind_func(fname, "pure", set())
            return f"def {fname}(lst):\n    return len(lst) * {k}"
        if kind == "def_global_list":
            self._bind_func(fname, "noarg", {L})
            return f"def {fname}():\n    {L}.append({k})"
        if kind == "def_global_int":
            self._bind_func(fname, "noarg", {i})
            return f"def {fname}():\n    global {i}\n    {i} = {i} + {k}"
        if kind == "lambda":
            self._bind_func(fname, "noarg", {L})
            return f"{fname} = lambda: len({L})"
        # call
        name = r.choice(self._callable())
        what, _ = self.funcs[name]
        if what == "noarg":
            return f"print({name}())"
        if not self.lists:
            return "print(0)"
        arg = r.choice(sorted(self.lists))
        return f"print({name}({arg}))" if what == "pure" else f"{name}({arg})"

    def _bind_list(self, v: str) -> None:
        self.lists.add(v)

    def _bind_int(self, v: str) -> None:
        self.ints.add(v)

    def _bind_func(self, v: str, kind: str, need: set[str]) -> None:
        self.funcs[v] = (kind, need)


def build(seed: int, n: int, split: str = "tags"):
    """A notebook of ``n`` generated statements, one per cell, cut for ``split``.

    ``tags``: random step tags; ``cells``: untagged (one step per cell); ``headings``:
    markdown section headings between some cells.
    """
    r = Random(seed)
    gen = _Gen(r)
    cells = [v4.new_code_cell("import random", metadata={"tags": ["imports"]})]
    if r.randrange(2):
        seed_code = "random.seed(3)\nimport numpy as np\nnp.random.seed(3)"
        cells.append(v4.new_code_cell(seed_code, metadata={"tags": ["step:seed"]}))
        gen.seeded = True
    if r.randrange(3) == 0:
        cells.append(v4.new_code_cell("m = 4", metadata={"tags": ["pipeline-parameters"]}))
        gen.ints.add("m")
    if r.randrange(3) == 0:
        cells.append(
            v4.new_code_cell("def h(lst):\n    lst.append(9)", metadata={"tags": ["functions"]})
        )
        gen.funcs["h"] = ("mut", set())
        gen.role_funcs.add("h")
    for k in range(n):
        if split == "headings" and (k == 0 or r.randrange(3) == 0):
            cells.append(v4.new_markdown_cell(f"## Part {k}\n\nsome text"))
        cell = v4.new_code_cell(gen.statement())
        # (A step tag right after the role cells keeps generated code out of Kale's imports
        # block, which every step replays: random draws there are a known gap.)
        if split == "tags" and (r.randrange(3) == 0 or (k == 0 and not KNOWN_GAPS)):
            cell.metadata["tags"] = [f"step:s{k}"]
        cells.append(cell)
    return v4.new_notebook(cells=cells)


class _Shell:
    """The few IPython services generated cells use, deterministic (no timings)."""

    def __init__(self, ns: dict):
        self.ns = ns

    def run_line_magic(self, name: str, arg: str) -> None:
        assert name == "time", name
        exec(compile(arg, "<magic>", "exec"), self.ns)

    def run_cell_magic(self, name: str, arg: str, body: str) -> None:
        assert name == "capture", name
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(body, "<capture>", "exec"), self.ns)
        self.ns[arg.strip()] = out.getvalue()

    def getoutput(self, cmd: str) -> list[str]:
        return [cmd.split()[-1]]


def _exec_cell(code: str, ns: dict) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    ns.setdefault("get_ipython", lambda: _Shell(ns))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(TransformerManager().transform_cell(code), "<cell>", "exec"), ns)
    return out.getvalue()


def straight(book) -> dict[int, str] | None:
    """Printed text per cell of a top-to-bottom run (None if the program fails)."""
    ns: dict = {"__name__": "__main__"}
    state = random_module.getstate()
    try:
        return {
            i: _exec_cell(c.source, ns) for i, c in enumerate(book.cells) if c.cell_type == "code"
        }
    except Exception:
        return None
    finally:
        random_module.setstate(state)


def as_pipeline(book, p: Pipeline) -> dict[int, str]:
    """Printed text per cell when run as the pipeline, step by step in fresh namespaces.

    Each step gets a fresh ``__main__`` module (as a kernel has), its parameters, its
    replayed definitions, then its inputs and RNG states through the runtime's own
    ``load_inputs``; its outputs are written with the runtime's ``save_outputs``.
    """
    printed: dict[int, str] = {}
    params = {q.name: q.source for q in p.parameters}
    outer_state, outer_main = random_module.getstate(), sys.modules["__main__"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for step in p.steps:
                main = types.ModuleType("__main__")
                sys.modules["__main__"] = main
                ns = main.__dict__
                random_module.seed()  # a fresh kernel: unseeded
                for name in step.parameters:
                    exec(params[name], ns)
                for d in step.definitions:
                    _exec_cell(d.source, ns)  # the runtime replays them in IPython
                inputs = {
                    n: os.path.join(tmp, src, value_dirname(n))
                    for n, src in step.input_sources.items()
                }
                for pv, src in step.state_inputs.items():
                    key = STATE_PREFIX + pv
                    inputs[key] = os.path.join(tmp, src, value_dirname(key))
                load_inputs(ns, inputs)
                for i in step.cells:
                    if book.cells[i].cell_type == "code":
                        printed[i] = _exec_cell(book.cells[i].source, ns)
                outputs = list(step.outputs) + [STATE_PREFIX + s for s in step.state_outputs]
                save_outputs(ns, os.path.join(tmp, step.name), outputs)
        finally:
            random_module.setstate(outer_state)
            sys.modules["__main__"] = outer_main
    return printed


def check(book, split: str) -> None:
    want = straight(book)
    if want is None:
        return
    p = analyze(book, path="generated.ipynb", split=split)  # type: ignore[arg-type]
    if any(d.severity.value in ("error", "warning") for d in p.diagnostics):
        return  # the analysis already says the pipeline may differ
    got = as_pipeline(book, p)
    program = "\n".join(
        f"# cell {i} {c.metadata.get('tags', [])}\n{c.source}" for i, c in enumerate(book.cells)
    )
    in_steps = {i for step in p.steps for i in step.cells}
    for i, text in want.items():
        if i not in in_steps:
            continue  # imports/functions blocks (Kale: with the untagged cells after them)
        assert got.get(i, "") == text, f"cell {i} differs (split={split}):\n{program}"


@_SETTINGS
@given(
    st.integers(0, 2**32 - 1), st.integers(1, 10), st.sampled_from(["tags", "cells", "headings"])
)
def test_pipeline_prints_what_the_notebook_prints(seed, n, split):
    check(build(seed, n, split), split)
