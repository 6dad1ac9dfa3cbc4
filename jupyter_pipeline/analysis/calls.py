"""Calls in the notebook-order pass: what a call does to its arguments, the global random
generators, process-wide state and files, and the code it evaluates; star imports and
magics.

A call is resolved where it happens: its callee's binding at that point of the notebook
says whether it is a library function (known effects), a notebook function (its summary)
or a method of a data object.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re

from jupyter_pipeline.analysis.bindings import Binding, StepState
from jupyter_pipeline.analysis.dyncode import BIND, BUILT, CODE, EXEC, passed_values
from jupyter_pipeline.analysis.facts import CallInfo, Cond, DefInfo, Event, FuncSummary
from jupyter_pipeline.analysis.files import literal_file_access, usable_path
from jupyter_pipeline.analysis.knowledge import (
    KERNEL_NAMES,
    LIBRARY_MUTATORS,
    MUTATING_BUILTINS,
    NUMPY_RANDOM_NOT_GLOBAL,
    OPAQUE_MAGICS,
    PURE_BUILTINS,
    PURE_LIBRARIES,
    RANDOM_FUNCS,
    RNG_METHODS,
    STATE_MAGICS,
    STATE_SETTERS,
    UNTRACKED_SEEDS,
)
from jupyter_pipeline.analysis.names import NameEvents
from jupyter_pipeline.analysis.source import parse_code_string
from jupyter_pipeline.model import Severity

__all__ = ["CallEffects"]

_CONTAINER_STATE = ("sys.path", "os.environ", "matplotlib.rcParams", "matplotlib.pyplot.rcParams",
                    "pandas.options")  # fmt: skip
_CONTAINER_MUTATORS = frozenset(
    {"append", "insert", "extend", "remove", "update", "setdefault", "pop", "clear", "__setitem__"}
)


class CallEffects(NameEvents):
    """What a call does, resolved against what its callee is bound to at that point."""

    def full_name(self, st: StepState | None, path: tuple[str, ...]) -> str | None:
        """The dotted name a call resolves to, when its root is an import or a builtin.

        ``st`` None resolves against the notebook-wide bindings (imports/functions cells).
        """
        if not path:
            return None
        b = self.current(st, path[0]) if st is not None else self.env.get(path[0])
        if b is None:
            return path[0] if path[0] in KERNEL_NAMES and len(path) == 1 else None
        if b.kind in ("import", "role") and b.info is not None and b.info.origin:
            return ".".join((b.info.origin, *path[1:]))
        return None

    def rng_target(self, call: CallInfo, st: StepState | None) -> tuple[str, str] | None:
        """('seed'|'use', pseudo-variable) if the call touches a tracked global RNG."""
        full = self.full_name(st, call.path)
        if full is None:
            return None
        if full == "random.seed":
            return ("seed", "random")
        if full.startswith("random.") and full.split(".")[-1] in RANDOM_FUNCS:
            return ("use", "random")
        if full == "numpy.random.seed":
            return ("seed", "numpy.random")
        if full.startswith("numpy.random.") and full.split(".")[2] not in NUMPY_RANDOM_NOT_GLOBAL:
            return ("use", "numpy.random")
        if (
            "numpy.random" in self.seeded
            and full.split(".")[0] == "sklearn"
            and "random_state" not in call.kwargs
        ):
            return ("use", "numpy.random")
        return None

    def call(
        self, st: StepState, call: CallInfo, cell: int, line: int, cond: Cond, in_function: bool
    ) -> None:
        path = call.path
        full = self.full_name(st, path)
        rng = self.rng_target(call, st)
        if rng is None and len(path) >= 2 and "numpy.random" in self.seeded:
            b = self.current(st, path[0])
            if (
                b is not None
                and b.kind == "data"
                and path[-1] in RNG_METHODS
                and "random_state" not in call.kwargs
            ):
                rng = ("use", "numpy.random")
        if rng is not None:
            self.rng_event(st, rng[0], rng[1], cell, line)
        if full is not None:
            if full in UNTRACKED_SEEDS:
                self.diag(
                    "global-state",
                    Severity.warning,
                    cell,
                    line,
                    f"{full}() seeds a random generator this tool does not carry between "
                    "steps; seed it in every step that draws from it",
                    st.name,
                )
            self.maybe_state_call(st, call, full, cell, line, cond or in_function)
        self.file_call(st, call, full, cell, line)
        self.code_arguments(st, call, cell, line, cond)
        if in_function:
            return
        # What the call may do to its arguments.
        b = self.current(st, path[0]) if path else None
        victims: list[str | None] = []
        if full is not None:
            top = full.split(".")[0]
            if full in LIBRARY_MUTATORS:
                k = LIBRARY_MUTATORS[full]
                victims = [call.args[k]] if 0 <= k < len(call.args) else []
            elif full in MUTATING_BUILTINS:
                victims = call.args[:1]
            elif top in PURE_LIBRARIES or full in PURE_BUILTINS:
                victims = []
            else:
                victims = call.args + list(call.kwargs.values())
        elif b is not None and b.kind in ("function", "class") and b.info and b.info.summary:
            s = b.info.summary
            for p in s.mutated_params:
                if isinstance(p, int) and 0 <= p < len(call.args):
                    victims.append(call.args[p])
                elif isinstance(p, int) and 0 <= p < len(s.param_names):
                    victims.append(call.kwargs.get(s.param_names[p]))  # passed by keyword
                elif isinstance(p, str):
                    victims.append(call.kwargs.get(p))
        elif b is not None and len(path) >= 2:
            victims = []  # a method on a data object: it changes the receiver, not arguments
        elif b is None and path and path[0] in KERNEL_NAMES:
            victims = []
        else:
            victims = call.args + list(call.kwargs.values())
        for v in victims:
            if v is not None:
                self.mutate(st, v, cell, line, Event("mutate", v, line, cond))

    def callee_code(
        self, st: StepState, path: tuple[str, ...]
    ) -> tuple[Binding, FuncSummary, int, str] | None:
        """A notebook function, class or instance method that evaluates code it is given.

        Returns (its definition's binding, its summary, leading parameters the call does not
        pass, how to name it), or None when the callee is anything else.
        """
        b = self.current(st, path[0]) if path else None
        if b is None:
            return None
        if len(path) == 1 and b.info is not None and b.info.summary is not None:
            s = b.info.summary
            return (b, s, 0, f"{path[0]}()") if s.code_params or s.dynamic else None
        cls = b.instance_of
        if len(path) == 2 and cls is not None and cls.info and cls.info.summary:
            method = cls.info.summary.methods.get(path[1])
            if method is not None and method.code_params:
                return cls, method, 1, f"{cls.name}.{path[1]}()"
        return None

    def code_names(self, cls: Binding, ctor: CallInfo) -> list[tuple[str, str]]:
        """Names read by the code an instance's methods evaluate: the literals it was given."""
        s = cls.info.summary if cls.info is not None else None
        if s is None:
            return []
        out = []
        for param, roles in sorted(s.code_params.items()):
            if CODE not in roles or BUILT in roles:
                continue
            for value in passed_values(ctor, s, param):
                for name in _names_in(value) if value is not None else ():
                    out.append((name, f"as code by {cls.name}() (defined in cell {cls.cell})"))
        return out

    def code_arguments(
        self, st: StepState, call: CallInfo, cell: int, line: int, cond: Cond
    ) -> None:
        """A call of a notebook function that evaluates an argument as code.

        A string literal passed there is code written at this call site: its names are
        read here (inputs, with the function named in the reason), and a name it assigns
        through ``globals()[name] = …`` is bound here. Anything else passed there hides what
        is read; so does code the function evaluates from elsewhere.
        """
        found = self.callee_code(st, call.path)
        if found is None:
            return
        b, s, skip, what = found
        for param, roles in sorted(s.code_params.items()):
            for value in passed_values(call, s, param, skip):
                if value is None or BUILT in roles:
                    built = ", built from it," if BUILT in roles else ""
                    self.diag(
                        "dynamic-code",
                        Severity.warning,
                        cell,
                        line,
                        f"{what} (defined in cell {b.cell}) evaluates its argument {param!r} as "
                        f"code{built} and what is passed here is not a string literal, so "
                        "which variables it reads is unknown; pass the name as a literal "
                        "or keep this code in one step with its producers",
                        st.name,
                    )
                    continue
                if CODE in roles:
                    why = f"as code by {what} (defined in cell {b.cell})"
                    for name in _names_in(value):
                        self.diag(
                            "name-in-string",
                            Severity.warning,
                            cell,
                            line,
                            f"{name!r} is read by {what} (defined in cell {b.cell}), which "
                            "evaluates the string passed here as code; it is an input of this "
                            "step — keep the string literal so it stays visible",
                            st.name,
                            [name],
                        )
                        self.read_via(st, name, why, cell, line, cond)
                if BIND in roles and value.isidentifier():
                    self.bind_name(st, value, "data", None, cell, line, cond)
                if EXEC in roles:  # `exec(code, globals())`: what the code assigns is global
                    for name in _names_in(value, ast.Store):
                        self.bind_name(st, name, "data", None, cell, line, cond)
        if s.dynamic and skip == 0:
            self.diag(
                "dynamic-code",
                Severity.warning,
                cell,
                line,
                f"{what} (defined in cell {b.cell}) uses {s.dynamic}() on code this tool "
                "cannot see, "
                "so which variables it reads or writes is unknown; list them explicitly or "
                "keep its calls in one step with their producers",
                st.name,
            )

    def rng_event(self, st: StepState, what: str, pv: str, cell: int, line: int) -> None:
        if what == "seed":
            if pv not in self.seeded:
                self.diag(
                    "rng-state",
                    Severity.info,
                    cell,
                    line,
                    f"the global {pv} generator is seeded here; its state is carried from "
                    "step to step so draws match the notebook",
                    st.name,
                )
            self.seeded.add(pv)
            st.state_local.add(pv)
            st.state_writes.add(pv)
            return
        if pv not in self.seeded or pv in st.state_local:
            return
        producer = self.rng.get(pv)
        if producer is not None:
            st.state_inputs[pv] = (producer, cell, line)
        st.state_local.add(pv)
        st.state_writes.add(pv)

    def maybe_state_call(
        self, st: StepState, call: CallInfo, full: str, cell: int, line: int, cond: Cond | bool
    ) -> None:
        # The setter is ``full`` or a dotted prefix of it (no setter is a prefix of another):
        # a set lookup per prefix instead of a scan of every setter (calls are frequent).
        parts = full.split(".")
        for k in range(1, len(parts) + 1):
            setter = full if k == len(parts) else ".".join(parts[:k])
            if setter in STATE_SETTERS:
                container_read = (
                    setter in _CONTAINER_STATE
                    and full != setter
                    and full.split(".")[-1] not in _CONTAINER_MUTATORS
                )
                if container_read:  # sys.path.index(…), os.environ.get(…): reads, not settings
                    return
                source = call.source if call.statement else ""
                self.state_statement(st, cell, line, source, cond, full)
                return

    def file_call(
        self, st: StepState, call: CallInfo, full: str | None, cell: int, line: int
    ) -> None:
        found = literal_file_access(call, full, lambda path: self.full_name(st, path))
        if found is not None:
            self.file_event(st, cell, line, found[0], write=found[1])

    def file_event(self, st: StepState, cell: int, line: int, path: str, write: bool) -> None:
        if not usable_path(path):
            return
        norm = os.path.normpath(path)
        if write:
            st.files_written.setdefault(norm, (cell, line))
            return
        if norm in st.files_written:
            return
        src = self.file_writer.get(norm)
        if src is not None and src[0] != st.name:
            st.file_sources.setdefault(norm, (src[0], src[1], src[2], cell, line))
            self.diag(
                "file-handoff",
                Severity.warning,
                cell,
                line,
                f"{path!r} is read here but written by step {src[0]!r} (cell {src[1]}); "
                "the steps are ordered so it works on this machine, but on Kubeflow steps "
                "share no disk — pass the data as a variable or use a shared volume",
                st.name,
                [path],
            )

    def star_import(self, st: StepState | None, cell: int, ev: Event) -> None:
        module = ev.name
        names: list[str] | None = None
        if module and not module.startswith("."):
            try:
                if importlib.util.find_spec(module.split(".")[0]) is not None:
                    mod = importlib.import_module(module)
                    names = list(
                        getattr(mod, "__all__", None)
                        or [n for n in dir(mod) if not n.startswith("_")]
                    )
            except Exception:  # importing arbitrary modules can fail in any way
                names = None
        if names is None:
            self.uncertain(cell)
            self.diag(
                "star-import",
                Severity.warning,
                cell,
                ev.line,
                f"`from {module} import *` cannot be resolved here, so names it defines "
                "are guessed; import the names you use explicitly",
                st.name if st else None,
            )
            return
        self.diag(
            "star-import",
            Severity.warning,
            cell,
            ev.line,
            f"`from {module} import *` binds {len(names)} names; it is replayed in steps "
            "that use them, but explicit imports are clearer",
            st.name if st else None,
        )
        info: DefInfo = ev.info
        for n in names:
            ni = DefInfo(info.source, origin=f"{module}.{n}", statement_id=info.statement_id)
            if st is None:
                self.env[n] = Binding(n, "role", None, cell, ev.line, info=ni)
            else:
                self.bind_name(st, n, "import", ni, cell, ev.line, ev.cond)

    def magic(self, st: StepState, cell: int, ev: Event) -> None:
        name, arg = ev.name, ev.info or ""
        if name in STATE_MAGICS:
            source = f"get_ipython().run_line_magic({name!r}, {arg!r})"
            self.state_statement(st, cell, ev.line, source, ev.cond, f"%{name}")
        elif name in OPAQUE_MAGICS:
            self.uncertain(cell)
            self.diag(
                "opaque-magic",
                Severity.warning,
                cell,
                ev.line,
                f"%{name} may define variables this tool cannot see; names it defines "
                "are not passed to other steps",
                st.name,
            )
        elif name in ("pinfo", "pinfo2", "pdoc", "pdef", "psource", "pfile"):
            # `x?` shows x: it reads x when x exists (an unknown name only prints "not found").
            root = arg.strip().split(".")[0]
            known = self.env.get(root)
            if root.isidentifier() and (
                root in st.sure
                or root in st.maybe
                or (known is not None and known.kind != "deleted")
            ):
                self.read(st, root, cell, ev.line, ev.cond)
        elif name in ("!", "!=") and re.search(r"\b(pip|conda|mamba|apt(-get)?)\s+install\b", arg):
            self.diag(
                "shell-install",
                Severity.info,
                cell,
                ev.line,
                "installs packages at run time; on Kubeflow add them to the step image "
                "instead (`jupyter-pipeline image`)",
                st.name,
            )


def _names_in(code: str, ctx: type[ast.expr_context] = ast.Load) -> list[str]:
    """The names a piece of code (a string evaluated as code) reads (or, with ``ctx``
    ``ast.Store``, assigns), in order, once each."""
    tree = parse_code_string(code)
    if tree is None:
        return []
    out: list[str] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ctx) and n.id not in out:
            out.append(n.id)
    return out
