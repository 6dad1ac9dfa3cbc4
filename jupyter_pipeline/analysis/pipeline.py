"""Notebook order → steps with inputs, outputs, edges and diagnostics.

One pass over the cells in notebook order replays what a top-to-bottom run does to global
names. Each step keeps what it binds locally; when it reads or may change a name it did not
surely bind itself, the name is an input, resolved to the last step *before it in notebook
order* that may have changed it. That rule is what makes the pipeline compute what the
notebook computes: an in-place mutation in a sibling step, a conditional rebinding or a
function that rebinds a global through ``global`` all make their step the producer.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

from jupyter_pipeline.analysis.dyncode import BIND, BUILT, CODE, EXEC, passed_values
from jupyter_pipeline.analysis.facts import (
    CallInfo,
    CellFacts,
    Cond,
    DefInfo,
    Event,
    FuncSummary,
)
from jupyter_pipeline.analysis.knowledge import (
    FILE_READERS,
    FILE_WRITERS,
    HISTORY_NAMES,
    KERNEL_NAMES,
    LIBRARY_MUTATORS,
    MUTATING_BUILTINS,
    NUMPY_RANDOM_NOT_GLOBAL,
    OPAQUE_MAGICS,
    PATH_TYPES,
    PURE_BUILTINS,
    PURE_LIBRARIES,
    RANDOM_FUNCS,
    RNG_METHODS,
    STATE_MAGICS,
    STATE_SETTERS,
    UNTRACKED_SEEDS,
)
from jupyter_pipeline.analysis.memo import analyzed_cell, fresh_facts
from jupyter_pipeline.analysis.source import CellSyntaxError, ParsedCell, parse_code_string
from jupyter_pipeline.model import (
    Definition,
    DefinitionKind,
    Diagnostic,
    Edge,
    EdgeKind,
    Metric,
    Parameter,
    ParameterType,
    Pipeline,
    Severity,
    Step,
)
from jupyter_pipeline.notebook import NotebookError, ParsedNotebook, Span

__all__ = ["build_pipeline"]

_HISTORY_RE = re.compile(r"^_(i{0,3}\d+)$")
_CONTAINER_STATE = ("sys.path", "os.environ", "matplotlib.rcParams", "matplotlib.pyplot.rcParams",
                    "pandas.options")  # fmt: skip
_CONTAINER_MUTATORS = frozenset(
    {"append", "insert", "extend", "remove", "update", "setdefault", "pop", "clear", "__setitem__"}
)
_DEF_KINDS = ("import", "function", "class")


@dataclass
class Binding:
    """The value a name has after some cell: who made it and how."""

    name: str
    kind: str  # data | import | function | class | param | deleted | role | derived
    step: str | None
    cell: int
    line: int
    cond: Cond = ()
    info: DefInfo | None = None
    sure: bool = True  # surely bound at some point so far (not only conditionally)
    instance_of: Binding | None = None  # the notebook class a data value was made from
    immutable: bool = False  # bound to an immutable literal: no alias can change it
    shares_with: str | None = None  # produced here only because this name now shares it
    # Names an instance's methods evaluate as code (`d = display('x')`): read wherever d is.
    code_reads: list[tuple[str, str]] = field(default_factory=list)  # (name, why)


@dataclass
class _StepState:
    span: Span
    index: int
    sure: set[str] = field(default_factory=set)
    maybe: dict[str, list[Cond]] = field(default_factory=dict)
    local: dict[str, Binding] = field(default_factory=dict)
    inputs: dict[str, Binding] = field(default_factory=dict)
    input_at: dict[str, tuple[int, int]] = field(default_factory=dict)
    writes: dict[str, Binding] = field(default_factory=dict)
    passthrough: dict[str, Binding] = field(default_factory=dict)
    # Where a name changed only through another name of its object (see _mutate_one).
    passthrough_at: dict[str, tuple[int, int]] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    params: set[str] = field(default_factory=set)
    definitions: dict[int, Definition] = field(default_factory=dict)
    state_defs: list[Definition] = field(default_factory=list)
    state_inputs: dict[str, tuple[str | None, int, int]] = field(default_factory=dict)
    state_local: set[str] = field(default_factory=set)
    state_writes: set[str] = field(default_factory=set)
    state_outputs: set[str] = field(default_factory=set)
    files_written: dict[str, tuple[int, int]] = field(default_factory=dict)
    file_sources: dict[str, tuple[str, int, int, int, int]] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    input_via: dict[str, str] = field(default_factory=dict)  # how an input is read, if not plainly

    @property
    def name(self) -> str:
        return self.span.name


class _Analyzer:
    def __init__(self, parsed: ParsedNotebook):
        self.nb = parsed
        self.path = parsed.path
        self.diags: list[Diagnostic] = list(parsed.diagnostics)
        self._seen_diag: set[tuple] = set()
        self.facts: dict[int, CellFacts] = {}
        self.env: dict[str, Binding] = {}
        self.rng: dict[str, str | None] = {}  # pseudo-variable -> last step that changed it
        self.seeded: set[str] = set()
        self.file_writer: dict[str, tuple[str, int, int]] = {}
        self.steps: list[_StepState] = []
        self.by_name: dict[str, _StepState] = {}
        self.parameters: list[Parameter] = []
        self.metrics: list[Metric] = []
        self.role_defs: list[Definition] = []
        self.parsed: dict[int, ParsedCell] = {}
        self.skip_cells: set[int] = set(parsed.role_cells("skip"))
        self.ever_bound: dict[str, int] = {}
        self.skip_bound: dict[str, int] = {}
        self.uncertain_from: int | None = None  # cell after which unseen names may exist
        self.writers: dict[str, list[str]] = defaultdict(list)
        # Names that currently share one object (b = a): one set object per group.
        self.aliases: dict[str, set[str]] = {}
        # For each definition statement, the bindings its definition-time reads saw.
        self.def_versions: dict[int, dict[str, Binding | None]] = {}
        # Computed lines of parameters cells (`d = a == 3`): name -> (key, snippet, reads).
        self.derived: dict[str, tuple[int, Definition, list[str]]] = {}

    # ------------------------------------------------------------------ diagnostics
    def diag(
        self,
        code: str,
        severity: Severity,
        cell: int | None,
        line: int | None,
        message: str,
        step: str | None = None,
        names: list[str] | None = None,
    ) -> None:
        key = (code, cell, line, tuple(names or ()), message)
        if key in self._seen_diag:
            return
        self._seen_diag.add(key)
        self.diags.append(
            Diagnostic(
                code=code,
                severity=severity,
                cell=cell,
                line=line,
                message=message,
                step=step,
                names=names or [],
            )
        )

    # ------------------------------------------------------------------ parsing
    def parse_all(self) -> None:
        skip_cells = self.skip_cells
        taken: set[int] = set()  # memoized facts already used by a cell of this notebook
        for span in self.nb.spans:
            for i in span.cells:
                cell = self.nb.cells[i]
                if cell.cell_type != "code":
                    continue
                try:
                    parsed, facts = analyzed_cell(cell.source)
                except CellSyntaxError as exc:
                    if i in skip_cells:
                        self.diag(
                            "skipped-cell-syntax",
                            Severity.info,
                            i,
                            exc.line,
                            "this skip-tagged cell is not valid Python; it is ignored",
                        )
                        continue
                    where = f"line {exc.line}: " if exc.line else ""
                    raise NotebookError(
                        self.path,
                        f"{where}syntax error ({exc.message}); fix the code, it would fail in "
                        "the notebook too",
                        i,
                    ) from None
                if id(facts) in taken:  # the same source again: its own identities
                    facts = fresh_facts(parsed)
                taken.add(id(facts))
                self.parsed[i] = parsed
                self.facts[i] = facts
                for ev in facts.events:
                    if ev.op in ("bind", "star"):
                        target = self.skip_bound if i in skip_cells else self.ever_bound
                        target.setdefault(ev.name, i)

    # ------------------------------------------------------------------ the pass
    def run(self) -> Pipeline:
        self.parse_all()
        # Kale's imports/functions cells run at the start of every step: bind them first.
        for span in self.nb.spans:
            if span.role in ("imports", "functions"):
                self.role_cells(span)
        # A step continues below a parameters cell (untagged cells after it): its cells after
        # that point see the parameters, the ones above do not — go in cell order.
        pending_params = [i for i in self.nb.role_cells("parameters") if i in self.facts]

        def parameters_before(cell: int) -> None:
            while pending_params and pending_params[0] < cell:
                self.parameters_cell(pending_params.pop(0))

        for span in self.nb.spans:
            if span.role in ("step", "metrics"):
                st = _StepState(span=span, index=len(self.steps))
                if span.role == "metrics":
                    n = sum(1 for s in self.steps if s.span.role == "metrics")
                    span.name = "pipeline-metrics" + (f"-{n + 1}" if n else "")
                self.steps.append(st)
                self.by_name[st.name] = st
                for i in span.cells:
                    if i in self.facts:
                        parameters_before(i)
                        if span.role == "metrics":
                            self.collect_metrics(i)
                        self.cell(st, i)
                self.commit(st)
            elif span.role == "parameters":
                parameters_before(max(span.cells) + 1)
            elif span.role == "skip":
                for i in span.cells:
                    self.check_skipped(i)
        parameters_before(len(self.nb.cells))
        return self.assemble()

    def role_cells(self, span: Span) -> None:
        kind = (
            DefinitionKind.imports_cell if span.role == "imports" else DefinitionKind.functions_cell
        )
        for i in span.cells:
            if i not in self.facts:
                continue
            self.role_defs.append(
                Definition(
                    cell=i,
                    line=1,
                    kind=kind,
                    names=sorted({e.name for e in self.facts[i].events if e.op == "bind"}),
                    source=self.nb.cells[i].source,
                )
            )
            for ev in self.facts[i].events:
                if ev.op == "bind":
                    k = ev.kind if ev.kind in ("function", "class") else "role"
                    self.env[ev.name] = Binding(ev.name, k, None, i, ev.line, info=ev.info)
                elif ev.op == "star":
                    self.star_import(None, i, ev)
                elif ev.op == "call":
                    seed = self.rng_target(ev.info, None)
                    if seed and seed[0] == "seed":
                        self.seeded.add(seed[1])
                        self.rng[seed[1]] = None
                    elif seed and seed[0] == "use" and seed[1] in self.seeded:
                        self.diag(
                            "random-in-replayed-cell",
                            Severity.warning,
                            i,
                            ev.line,
                            f"this {span.role} cell draws from the seeded {seed[1]} generator; "
                            "it runs again at the start of every step, so each step draws the "
                            "same numbers where the notebook drew them once — move the draw "
                            "into a step",
                        )
                elif ev.op == "magic" and ev.name in OPAQUE_MAGICS:
                    self.uncertain(i)

    # ------------------------------------------------------------------ parameters / metrics
    def parameters_cell(self, i: int) -> None:
        parsed = self.parsed[i]
        for stmt in parsed.tree.body:
            line = stmt.lineno + parsed.line_offset
            target: ast.expr | None = None
            value_node: ast.expr | None = None
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target, value_node = stmt.targets[0], stmt.value
            elif isinstance(stmt, ast.AnnAssign):
                target, value_node = stmt.target, stmt.value
            value = None
            ok = isinstance(target, ast.Name) and value_node is not None
            if ok:
                try:
                    value = ast.literal_eval(value_node)  # type: ignore[arg-type]
                except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                    ok = False
            if not ok or not isinstance(target, ast.Name):
                self.derived_value(i, stmt, line)
                continue
            name = target.id
            self.parameters = [p for p in self.parameters if p.name != name]
            self.parameters.append(
                Parameter(
                    name=name,
                    default=_jsonable(value),
                    type=_param_type(value),
                    cell=i,
                    line=line,
                    source=ast.get_source_segment(parsed.code, stmt) or f"{name} = {value!r}",
                )
            )
            self.env[name] = Binding(name, "param", None, i, line)

    def derived_value(self, i: int, stmt: ast.stmt, line: int) -> None:
        """A parameters-cell line that is not a literal assignment (``d = a == 3``).

        papermill runs it with the rest of the cell, before its injected overrides, so it
        sees the defaults. Here it is a derived value: not a parameter; each step that reads
        what it binds runs the parameters lines again (defaults, this line), then the
        overrides (``runtime.notebook.DERIVED_TAG``).
        """
        parsed = self.parsed[i]
        bound: list[str] = []
        for node in ast.walk(stmt):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                bound.append(node.id)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                bound += [(a.asname or a.name).split(".")[0] for a in node.names]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                bound.append(node.name)
        reads = sorted(
            {
                n.id
                for n in ast.walk(stmt)
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
            }
            - set(bound)
        )
        source = ast.get_source_segment(parsed.code, stmt) or ""
        names = sorted(set(bound))
        if not names:
            # `layers.append(3)`: binds nothing, but may change the parameters it names; a
            # step reading them must run it too.
            params = {p.name for p in self.parameters}
            names = [r for r in reads if r in params]
        snippet = Definition(
            cell=i, line=line, kind=DefinitionKind.derived, names=names, source=source
        )
        key = -(len(self.derived) + 1)  # apart from the statement ids of definitions
        for name in names:
            self.derived[name] = (key, snippet, reads)
            self.env[name] = Binding(name, "derived", None, i, line)
        shown = ", ".join(names) or "nothing"
        self.diag(
            "parameter-derived",
            Severity.info,
            i,
            line,
            f"computed, not a parameter ({shown}): as in papermill it runs before the "
            "overrides, so it sees the defaults (each step that uses it runs it again); "
            "compute it in a later cell to see -p values",
            names=names,
        )

    def use_derived(self, st: _StepState, name: str, cell: int, line: int) -> None:
        """A step reads a derived value: it replays the line, and takes what the line reads."""
        key, snippet, reads = self.derived[name]
        if key in st.definitions:
            return
        st.definitions[key] = snippet
        params = {p.name for p in self.parameters}
        for r in reads:
            if r in params:  # the parameters lines run again before it (see DERIVED_TAG)
                st.params.add(r)
            else:
                self.read(st, r, cell, line, ())

    def collect_metrics(self, i: int) -> None:
        parsed = self.parsed[i]
        for stmt in parsed.tree.body:
            line = stmt.lineno + parsed.line_offset
            node = stmt.value if isinstance(stmt, ast.Expr) else None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "print"
                and len(node.args) == 1
            ):
                node = node.args[0]
            if isinstance(node, ast.Name):
                self.metrics.append(Metric(name=node.id, cell=i, line=line))
                self.steps[-1].metrics.append(node.id)
            else:
                self.diag(
                    "metric-not-name",
                    Severity.warning,
                    i,
                    line,
                    "a pipeline-metrics cell should only print variables "
                    "(`print(accuracy)`); this line is run but reports no metric",
                )

    @cached_property
    def last_read(self) -> dict[str, int]:
        """For each name, the last cell outside skip cells that reads it."""
        out: dict[str, int] = {}
        for j, f in self.facts.items():
            if j not in self.skip_cells:
                for e in f.events:
                    if e.op == "read":
                        out[e.name] = max(j, out.get(e.name, j))
        return out

    def check_skipped(self, i: int) -> None:
        facts = self.facts.get(i)
        if facts is None:
            return
        changed = {e.name for e in facts.events if e.op in ("bind", "mutate", "del")}
        later = {n for n in changed if self.last_read.get(n, -1) > i}
        touched = sorted(later & set(self.env))
        if touched:
            self.diag(
                "skipped-cell-changes",
                Severity.warning,
                i,
                None,
                f"this skip-tagged cell may change {', '.join(touched)}, which later steps "
                "read; the pipeline will not see that change — untag the cell or move "
                "the change into a step",
                names=touched,
            )

    # ------------------------------------------------------------------ one cell
    def cell(self, st: _StepState, i: int) -> None:
        facts = self.facts[i]
        if facts.opaque_magic == "writefile" and facts.cell_magic_args:
            path = [a for a in facts.cell_magic_args.split() if not a.startswith("-")]
            if path:
                self.file_event(st, i, 1, path[0], write=True)
        for ev in facts.events:
            op = ev.op
            if op == "read":
                self.read(st, ev.name, i, ev.line, ev.cond)
            elif op == "bind":
                self.bind(st, ev, i)
            elif op == "mutate":
                self.mutate(st, ev.name, i, ev.line, ev)
            elif op == "immutable":
                made = st.local.get(ev.name)
                if made is not None:
                    made.immutable = True
            elif op == "instance":
                made = st.local.get(ev.name)
                cls_name, ctor = ev.info
                cls = self.current(st, cls_name)
                if made is not None and cls is not None and cls.kind == "class":
                    made.instance_of = cls
                    made.code_reads = self.code_names(cls, ctor)
            elif op == "alias":
                self.alias(st, ev.name, ev.info, i, ev.line, ev.cond)
            elif op == "del":
                self.delete(st, ev.name, i, ev.line, ev.cond)
            elif op == "call":
                self.call(st, ev.info, i, ev.line, ev.cond, in_function=False)
            elif op == "string":
                self.diag(
                    "name-in-string",
                    Severity.warning,
                    i,
                    ev.line,
                    f"{ev.name!r} is used inside a string ({ev.info}); it is treated as "
                    "an input of this step — keep the string literal so it stays visible",
                    st.name,
                    [ev.name],
                )
                self.read(st, ev.name, i, ev.line, ev.cond)
            elif op == "dynamic":
                self.diag(
                    "dynamic-code",
                    Severity.warning,
                    i,
                    ev.line,
                    f"{ev.name}() hides which variables are read or written; list them "
                    "explicitly or keep this code in one step with its producers",
                    st.name,
                )
            elif op == "star":
                self.star_import(st, i, ev)
            elif op == "magic":
                self.magic(st, i, ev)

    # ------------------------------------------------------------------ name events
    def current(self, st: _StepState, name: str) -> Binding | None:
        if name in st.local and (name in st.sure or name in st.maybe):
            return st.local[name]
        return self.env.get(name)

    def read(
        self,
        st: _StepState,
        name: str,
        cell: int,
        line: int,
        cond: Cond,
        _active: set[int] | None = None,
    ) -> None:
        if name in st.sure:
            self.apply_definition(st, st.local.get(name), cell, line, _active)
            return
        outside = self.env.get(name)
        local = st.local.get(name)
        if local is not None and local.kind == "deleted" and name not in st.maybe:
            outside = local  # deleted earlier in this step: that is what a read meets
        if name in st.maybe:
            self.apply_definition(st, local, cell, line, _active)
            if name in st.sure:  # a function applied just above may have bound it
                return
            if any(cond[: len(b)] == b for b in st.maybe.get(name, ())):
                return  # bound earlier in a block around this read: surely bound here
            if outside is None or outside.kind == "deleted":
                return
        if outside is None or outside.kind == "deleted":
            self.undefined(st, name, cell, line, outside, in_function=_active is not None)
            return
        if outside.kind == "param":
            st.params.add(name)
            return
        if outside.kind == "derived":
            self.use_derived(st, name, cell, line)
            return
        if outside.kind == "role":
            return
        if outside.kind in _DEF_KINDS:
            if outside.step is not None:
                self.add_definition(st, outside, cell, line, _active)
            self.apply_definition(st, outside, cell, line, _active)
            return
        if not outside.sure:
            self.diag(
                "conditional-definition",
                Severity.warning,
                cell,
                line,
                f"{name!r} is only defined under a condition (cell {outside.cell}, line "
                f"{outside.line}); if that branch did not run this fails — define it "
                "unconditionally",
                st.name,
                [name],
            )
        if name not in st.inputs:
            st.inputs[name] = outside
            st.input_at[name] = (cell, line)
        st.sure.add(name)  # loaded at the step's start: present from here on
        # A function that travels as data (defined under a condition) still reads and
        # changes globals when called here.
        self.apply_definition(st, outside, cell, line, _active)
        cls = outside.instance_of
        if cls is not None:
            # An instance of a notebook class: the consumer defines the class itself (so the
            # loaded object is of *its* class) and its methods read the consumer's globals.
            if cls.step is not None:
                self.add_definition(st, cls, cell, line, _active)
            self.apply_definition(st, cls, cell, line, _active)
            for code_name, why in outside.code_reads:  # evaluated when its methods run here
                self.read_via(st, code_name, why, cell, line, cond)
        st.passthrough.pop(name, None)

    def undefined(
        self,
        st: _StepState,
        name: str,
        cell: int,
        line: int,
        outside: Binding | None,
        in_function: bool,
    ) -> None:
        if name in KERNEL_NAMES:
            return
        if name in HISTORY_NAMES or _HISTORY_RE.match(name):
            self.diag(
                "output-history",
                Severity.warning,
                cell,
                line,
                f"{name!r} reads IPython's output history, which does not exist in a "
                "step's fresh kernel; assign the value to a variable instead",
                st.name,
                [name],
            )
            return
        if outside is not None and outside.kind == "deleted":
            self.diag(
                "deleted-name",
                Severity.error,
                cell,
                line,
                f"{name!r} was deleted in cell {outside.cell} (line {outside.line}) before "
                "this read; remove the `del` or the read",
                st.name,
                [name],
            )
            return
        if in_function:
            self.diag(
                "undefined-name-in-function",
                Severity.warning,
                cell,
                line,
                f"a function called here reads {name!r}, which is not defined at this "
                "point; it fails if that code path runs",
                st.name,
                [name],
            )
            return
        if self.uncertain_from is not None and self.uncertain_from <= cell:
            self.diag(
                "maybe-undefined",
                Severity.warning,
                cell,
                line,
                f"{name!r} is not defined by any visible code; it may come from the star "
                f"import or magic in cell {self.uncertain_from} — import it explicitly",
                st.name,
                [name],
            )
            return
        if name in self.skip_bound and name not in self.ever_bound:
            self.diag(
                "defined-in-skipped-cell",
                Severity.error,
                cell,
                line,
                f"{name!r} is only defined in skip-tagged cell {self.skip_bound[name]}; "
                "untag that cell or define it in a step",
                st.name,
                [name],
            )
            return
        later = self.ever_bound.get(name)
        if later is not None and later >= cell:
            self.diag(
                "used-before-definition",
                Severity.error,
                cell,
                line,
                f"{name!r} is read here but first defined later, in cell {later}; move "
                "the definition above or reorder the cells",
                st.name,
                [name],
            )
            return
        if later is not None:
            return  # bound in an earlier cell of a role we do not track as data (e.g. metrics)
        self.diag(
            "undefined-name",
            Severity.error,
            cell,
            line,
            f"{name!r} is read but never defined in this notebook (a typo?); define it "
            "or fix the name",
            st.name,
            [name],
        )

    def add_definition(
        self, st: _StepState, b: Binding, cell: int, line: int, active: set[int] | None
    ) -> None:
        info = b.info
        if info is None or info.statement_id in st.definitions:
            return
        kind = {
            "import": DefinitionKind.import_,
            "function": DefinitionKind.function,
            "class": DefinitionKind.class_,
        }[b.kind]
        names = sorted(n for n, x in self.env.items() if x.info is info) or [b.name]
        st.definitions[info.statement_id] = Definition(
            cell=b.cell, line=b.line, kind=kind, names=names, source=info.source
        )
        # What the statement itself reads when replayed (decorators, defaults, bases…).
        then = self.def_versions.get(info.statement_id, {})
        for r in info.reads:
            before, now = then.get(r), self.env.get(r)
            if before is not None and before.kind == "data" and now is not before:
                changed = now.cell if now is not None else "?"
                self.diag(
                    "definition-time-value",
                    Severity.warning,
                    cell,
                    line,
                    f"{b.name!r} (cell {b.cell}) evaluates {r!r} when it is defined (a default, "
                    f"decorator or class body), and {r!r} changes in cell {changed} before step "
                    f"{st.name!r} uses {b.name!r}: the definition replayed there sees the new "
                    f"value — pass {r!r} as an argument, or define {b.name!r} after the change",
                    st.name,
                    [b.name, r],
                )
            self.read(st, r, cell, line, (), active)

    def apply_definition(
        self, st: _StepState, b: Binding | None, cell: int, line: int, active: set[int] | None
    ) -> None:
        """A use of a function or class: charge what calling it reads and changes."""
        if b is None or b.info is None or b.info.summary is None:
            return
        sid = b.info.statement_id
        active = set() if active is None else active
        if sid in active:
            return
        active.add(sid)
        s = b.info.summary
        for r in sorted(s.reads):
            self.read(st, r, cell, line, (-1,), active)
        for w in sorted(s.writes):
            self.bind_name(st, w, "data", None, cell, line, cond=(-1,))
        for m in sorted(s.mutates):
            self.mutate(st, m, cell, line, None)
        for c in s.calls:
            self.call(st, c, cell, line, (-1,), in_function=True)
        active.discard(sid)

    def bind(self, st: _StepState, ev: Event, cell: int) -> None:
        if ev.kind == "merge":  # every branch bound it: surely bound from here on
            if ev.name in st.maybe:
                st.maybe.pop(ev.name)
                st.sure.add(ev.name)
                st.passthrough.pop(ev.name, None)
                if ev.name in st.writes:
                    st.writes[ev.name].cond = ()
            return
        if isinstance(ev.info, DefInfo) and ev.info.reads:
            self.def_versions[ev.info.statement_id] = {
                r: self.current(st, r) for r in ev.info.reads
            }
        kind = ev.kind if ev.kind in _DEF_KINDS and not ev.cond else "data"
        if ev.kind in ("function", "class") and ev.cond:
            kind = "data"
        self.bind_name(st, ev.name, kind, ev.info, cell, ev.line, ev.cond)

    def bind_name(
        self,
        st: _StepState,
        name: str,
        kind: str,
        info: DefInfo | None,
        cell: int,
        line: int,
        cond: Cond,
    ) -> None:
        prev = self.env.get(name)
        if prev is not None and prev.kind == "param":
            self.diag(
                "parameter-reassigned",
                Severity.warning,
                cell,
                line,
                f"pipeline parameter {name!r} is reassigned here; steps after this one "
                "see the new value, so overriding the parameter does not reach them",
                st.name,
                [name],
            )
        self.unalias(name)
        # A conditionally defined function is data (pickled) but still has effects when called.
        b = Binding(name, kind, st.name, cell, line, cond, info)
        if cond:
            if name not in st.sure:
                st.maybe.setdefault(name, []).append(cond)
                if (
                    prev is not None
                    and prev.kind not in ("deleted",)
                    and name not in st.passthrough
                ):
                    st.passthrough[name] = prev
        else:
            st.sure.add(name)
            st.maybe.pop(name, None)
            st.passthrough.pop(name, None)
        st.local[name] = b
        st.writes[name] = b

    def unalias(self, name: str) -> None:
        """``name`` now refers to a new object: it leaves its alias group."""
        group = self.aliases.pop(name, None)
        if group is not None:
            group.discard(name)

    def alias(
        self, st: _StepState, target: str, source: str, cell: int, line: int, cond: Cond
    ) -> None:
        """``target`` was bound to (part of) ``source``'s object.

        Both must then travel together: this step produces every member of the group, so
        a later step loads them from one place, where the serializer keeps them one object,
        and a change through either name reaches the other — as in the notebook.
        """
        src = self.current(st, source)
        if src is None or src.kind != "data" or src.immutable or source == target:
            return  # aliasing a module, function or parameter value shares nothing mutable
        group = self.aliases.get(source, {source}) | self.aliases.get(target, {target})
        for member in group:
            self.aliases[member] = group
        for member in sorted(group - {target}):
            self._mutate_one(
                st,
                member,
                cell,
                line,
                Event("mutate", member, line, cond, "alias", target),
                through_alias=True,
            )

    def mutate(
        self,
        st: _StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
    ) -> None:
        """``name``'s object may change here; so do the objects of its aliases."""
        self._mutate_one(st, name, cell, line, ev)
        for member in sorted(self.aliases.get(name, set()) - {name}):
            self._mutate_one(st, member, cell, line, ev, through_alias=True)

    def _mutate_one(
        self,
        st: _StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
        through_alias: bool = False,
    ) -> None:
        """``name``'s object may change here.

        ``through_alias``: the change is made through another name of the same object (an
        alias group member), not through ``name`` itself.
        """
        if name in st.sure:
            mine = st.local.get(name)
            if (
                mine is not None
                and mine.kind == "import"
                and ev is not None
                and ev.kind not in ("method", "alias")
                and isinstance(ev.info, str)
            ):
                # `plt.rcParams[…] = …` right after the import: global state all the same.
                self.state_statement(st, cell, line, ev.info, ev.cond, f"{name}.…")
                return
            if name in st.inputs and name not in st.writes:
                # An input changed in place (read first, so it is "sure" here): later
                # readers must take it from this step, not from its producer.
                self.changed_here(st, name, cell, line, ev, st.inputs[name].instance_of)
            return  # a local object changed in place: still this step's value
        cond = ev.cond if ev is not None else (-1,)
        if any(cond[: len(b)] == b for b in st.maybe.get(name, ())):
            return  # bound earlier in a block around this change: a local object
        local = st.local.get(name) if name in st.maybe else None
        outside = self.env.get(name)
        base = local or outside
        if base is None or base.kind == "deleted":
            return  # the read before it reported the undefined name
        # A value made in an imports/functions cell (no DefInfo) is data once a step changes
        # it: later steps must load the changed value, not replay the original.
        if base.kind in _DEF_KINDS or (base.kind == "role" and base.info is not None):
            # Changing a module (pd.options.x = …, plt.rcParams[…] = …) is global state.
            if (
                ev is not None
                and ev.kind not in ("method", "alias")
                and isinstance(ev.info, str)
                and base.kind in ("import", "role")
            ):
                self.state_statement(st, cell, line, ev.info, ev.cond, f"{name}.…")
            return
        if outside is not None:
            if outside.kind == "param":
                st.params.add(name)
                self.diag(
                    "parameter-reassigned",
                    Severity.warning,
                    cell,
                    line,
                    f"pipeline parameter {name!r} is changed in place here; steps after "
                    "this one see the changed value",
                    st.name,
                    [name],
                )
            elif outside.kind == "data" and name not in st.inputs and through_alias:
                # Changed only through another name: this step holds the changed value from
                # here on, but it needs the old one only when a later step reads the name
                # (`need` makes it an input then, as for a name the step maybe rebinds). A
                # loop variable an earlier step left in the group (`for dataset in data:`)
                # and this step rebinds is then no input, and no needless KFP artifact.
                st.passthrough.setdefault(name, outside)
                st.passthrough_at.setdefault(name, (cell, line))
                self.changed_here(st, name, cell, line, ev, base.instance_of)
                return
            elif outside.kind == "data" and name not in st.inputs:
                # (an alias group pulling in a maybe-bound loop variable is no user error)
                if not outside.sure and not (ev is not None and ev.kind == "alias"):
                    self.diag(
                        "conditional-definition",
                        Severity.warning,
                        cell,
                        line,
                        f"{name!r} is only defined under a condition (cell "
                        f"{outside.cell}); define it unconditionally",
                        st.name,
                        [name],
                    )
                st.inputs[name] = outside
                st.input_at[name] = (cell, line)
        self.changed_here(st, name, cell, line, ev, base.instance_of)
        st.sure.add(name)
        st.maybe.pop(name, None)
        st.passthrough.pop(name, None)  # the outside value is now an explicit input

    def changed_here(
        self,
        st: _StepState,
        name: str,
        cell: int,
        line: int,
        ev: Event | None,
        instance_of: Binding | None,
    ) -> None:
        """``name``'s object changed in place in this step: the step now produces it."""
        b = Binding(name, "data", st.name, cell, line, instance_of=instance_of)
        if ev is not None and ev.kind == "alias":
            b.shares_with = ev.info
        st.local[name] = b
        st.writes[name] = b

    def delete(self, st: _StepState, name: str, cell: int, line: int, cond: Cond) -> None:
        outside = self.env.get(name)
        local = st.local.get(name)
        if name not in st.sure and name not in st.maybe:
            if local is not None and local.kind == "deleted":
                outside = local
            if outside is None or outside.kind == "deleted":
                self.undefined(st, name, cell, line, outside, in_function=False)
                return
            # `del x` needs x in this step's kernel too: it is an input like a read.
            self.read(st, name, cell, line, cond)
        if (
            cond
            and name not in st.sure
            and (outside is None or outside.kind == "deleted")
            and all(c[: len(cond)] == cond for c in st.maybe.get(name, ()))
        ):
            # Bound and deleted in the same block (`except … as e` does this): whichever
            # way the block goes, the name does not exist afterwards.
            cond = ()
        if cond:
            # Maybe deleted: the value may or may not exist afterwards, exactly as in the
            # notebook; consumers get it through this step either way.
            self.bind_name(st, name, "data", None, cell, line, cond=cond)
            return
        self.unalias(name)
        b = Binding(name, "deleted", st.name, cell, line)
        st.sure.discard(name)
        st.maybe.pop(name, None)
        st.passthrough.pop(name, None)
        st.local[name] = b
        st.writes[name] = b

    def commit(self, st: _StepState) -> None:
        for name, b in st.writes.items():
            prev = self.env.get(name)
            b.sure = not b.cond or (prev is not None and prev.sure and prev.kind != "deleted")
            b.step = st.name
            self.env[name] = b
            self.writers[name].append(st.name)
        for pv in st.state_writes:
            self.rng[pv] = st.name
        for p, (cell, line) in st.files_written.items():
            self.file_writer[p] = (st.name, cell, line)

    # ------------------------------------------------------------------ calls
    def full_name(self, st: _StepState | None, path: tuple[str, ...]) -> str | None:
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

    def rng_target(self, call: CallInfo, st: _StepState | None) -> tuple[str, str] | None:
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
        self, st: _StepState, call: CallInfo, cell: int, line: int, cond: Cond, in_function: bool
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

    # ------------------------------------------------------------------ code in arguments
    def callee_code(
        self, st: _StepState, path: tuple[str, ...]
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
        self, st: _StepState, call: CallInfo, cell: int, line: int, cond: Cond
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

    def read_via(
        self, st: _StepState, name: str, why: str, cell: int, line: int, cond: Cond
    ) -> None:
        """Read ``name``; if that makes it an input, remember how it was read (for the edge)."""
        was_input = name in st.inputs
        self.read(st, name, cell, line, cond)
        if not was_input and name in st.inputs:
            st.input_via[name] = why

    def rng_event(self, st: _StepState, what: str, pv: str, cell: int, line: int) -> None:
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
        self, st: _StepState, call: CallInfo, full: str, cell: int, line: int, cond: Cond | bool
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

    def state_statement(
        self, st: _StepState, cell: int, line: int, source: str, cond: Cond | bool, what: str
    ) -> None:
        if source and not cond:
            # Replayed in later steps that may not import the module themselves: replay the
            # imports the statement names along with it.
            try:
                tree: ast.AST | None = ast.parse(source)
            except SyntaxError:
                tree = None
            for n in ast.walk(tree) if tree is not None else ():
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
                    b = self.current(st, n.id)
                    if b is not None and b.kind == "import" and b.info is not None:
                        st.state_defs.append(
                            Definition(
                                cell=b.cell,
                                line=b.line,
                                kind=DefinitionKind.import_,
                                names=[n.id],
                                source=b.info.source,
                            )
                        )
            st.state_defs.append(
                Definition(cell=cell, line=line, kind=DefinitionKind.state, source=source)
            )
            self.diag(
                "global-state",
                Severity.info,
                cell,
                line,
                f"{what} sets process-wide state; it is replayed at the start of every "
                "later step so they see it too",
                st.name,
            )
        else:
            self.diag(
                "global-state",
                Severity.warning,
                cell,
                line,
                f"{what} sets process-wide state inside a condition, loop or function, "
                "which does not travel to other steps; move it to the imports cell or a "
                "top-level statement",
                st.name,
            )

    def file_call(
        self, st: _StepState, call: CallInfo, full: str | None, cell: int, line: int
    ) -> None:
        last = call.path[-1] if call.path else call.method
        if not last:
            return
        if full == "open" or (len(call.path) == 1 and last == "open" and full is None):
            path = call.strings[0] if call.strings else call.kwstrings.get("file")
            mode = (call.strings[1] if len(call.strings) > 1 else None) or call.kwstrings.get(
                "mode", "r"
            )
            if path:
                self.file_event(st, cell, line, path, write=any(c in (mode or "r") for c in "wax+"))
            return
        for table, write in ((FILE_WRITERS, True), (FILE_READERS, False)):
            k = table.get(full or "", table.get(last))
            if k is None:
                continue
            if k == -1:
                # pathlib methods: the path is the receiver, seen when it is `Path('lit')`
                receiver = call.receiver
                if receiver is not None and self.full_name(st, receiver[0]) in PATH_TYPES:
                    self.file_event(st, cell, line, receiver[1], write=write)
                return
            path = call.strings[k] if k < len(call.strings) else None
            if path is None:
                for key in (
                    "path",
                    "path_or_buf",
                    "filepath_or_buffer",
                    "fname",
                    "filename",
                    "file",
                ):
                    if key in call.kwstrings:
                        path = call.kwstrings[key]
                        break
            if path:
                self.file_event(st, cell, line, path, write=write)
            return

    def file_event(self, st: _StepState, cell: int, line: int, path: str, write: bool) -> None:
        if not path or "\n" in path or len(path) > 400 or "://" in path:
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

    # ------------------------------------------------------------------ imports and magics
    def star_import(self, st: _StepState | None, cell: int, ev: Event) -> None:
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

    def uncertain(self, cell: int) -> None:
        if self.uncertain_from is None or cell < self.uncertain_from:
            self.uncertain_from = cell

    def magic(self, st: _StepState, cell: int, ev: Event) -> None:
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

    # ------------------------------------------------------------------ assembly
    def need(
        self, producer: str | None, name: str, seen: set[tuple[str, str]] | None = None
    ) -> None:
        """Make `producer` output `name`, passing it through when it only maybe rebinds it."""
        if producer is None:
            return
        seen = seen or set()
        if (producer, name) in seen:
            return
        seen.add((producer, name))
        st = self.by_name[producer]
        st.outputs.add(name)
        through = st.passthrough.get(name)
        if through is not None and name not in st.inputs:
            if through.kind == "param":
                st.params.add(name)
            elif through.kind == "data":
                st.inputs[name] = through
                st.input_at[name] = st.passthrough_at.get(name, (st.span.cells[0], 1))
                self.need(through.step, name, seen)

    def role_parameters(self) -> set[str]:
        """Parameters read by imports/functions cells: they replay in every step."""
        param_cell = {q.name: q.cell for q in self.parameters}
        out: set[str] = set()
        for d in self.role_defs:
            bound: set[str] = set()
            for ev in self.facts[d.cell].events:
                if ev.op == "bind":
                    bound.add(ev.name)
                elif (
                    ev.op in ("read", "mutate")
                    and ev.name not in bound
                    and param_cell.get(ev.name, d.cell) < d.cell
                ):
                    out.add(ev.name)
        return out

    def assemble(self) -> Pipeline:
        role_params = self.role_parameters()
        # Outputs follow from what later steps take (iterate: pass-through adds inputs).
        for st in self.steps:
            for name, b in list(st.inputs.items()):
                self.need(b.step, name)
        for st in self.steps:
            for pv, (producer, _, _) in st.state_inputs.items():
                if producer is not None:
                    self.by_name[producer].state_outputs.add(pv)

        replay_sorted = []
        for st in self.steps:
            for d in st.state_defs:
                replay_sorted.append((st.index, d))

        order = {st.name: st.index for st in self.steps}
        edges: list[Edge] = []
        deps: dict[str, set[str]] = {st.name: set() for st in self.steps}
        prev_targets: dict[str, list[tuple[str, int]]] = {}
        for st in self.steps:
            for target, cell in st.span.prev:
                resolved = (
                    target
                    if target in self.by_name
                    else next(
                        (s.name for s in self.steps if _kfp(s.span.display_name) == target), None
                    )
                )
                if resolved is None:
                    continue  # the parser already refused unknown targets
                prev_targets.setdefault(st.name, []).append((resolved, cell))

        for st in self.steps:
            by_src: dict[str, list[str]] = defaultdict(list)
            for name, b in st.inputs.items():
                if b.step is not None:
                    by_src[b.step].append(name)
            for src in sorted(by_src, key=order.__getitem__):
                names = sorted(by_src[src])
                reasons = []
                for n in names:
                    b = st.inputs[n]
                    cell, line = st.input_at[n]
                    if b.shares_with:
                        reasons.append(
                            f"{n}: read in {st.name} (cell {cell}, line {line}); it shares "
                            f"objects with {b.shares_with} since {src} (cell {b.cell}, line "
                            f"{b.line}), so both travel from there"
                        )
                    else:
                        via = f", {st.input_via[n]}" if n in st.input_via else ""
                        reasons.append(
                            f"{n}: read in {st.name} (cell {cell}, line {line}){via}, last "
                            f"changed in {src} (cell {b.cell}, line {b.line})"
                        )
                edges.append(
                    Edge(
                        source=src,
                        target=st.name,
                        kind=EdgeKind.data,
                        variables=names,
                        reason="; ".join(reasons),
                    )
                )
                deps[st.name].add(src)
            for pv, (producer, cell, line) in sorted(st.state_inputs.items()):
                if producer is None:
                    continue
                edges.append(
                    Edge(
                        source=producer,
                        target=st.name,
                        kind=EdgeKind.state,
                        variables=[pv],
                        reason=f"{st.name} draws from the global {pv} generator (cell "
                        f"{cell}, line {line}); its state comes from {producer}",
                    )
                )
                deps[st.name].add(producer)
            for target, cell in prev_targets.get(st.name, []):
                edges.append(
                    Edge(
                        source=target,
                        target=st.name,
                        kind=EdgeKind.prev,
                        reason=f"prev:{target} tag on cell {cell}",
                    )
                )
                deps[st.name].add(target)
            files: dict[str, list[str]] = defaultdict(list)
            why: dict[str, list[str]] = defaultdict(list)
            for p, (src, wc, _wl, rc, rl) in st.file_sources.items():
                files[src].append(p)
                why[src].append(
                    f"{p}: written in {src} (cell {wc}), read in {st.name} (cell {rc}, line {rl})"
                )
            for src in sorted(files, key=order.__getitem__):
                edges.append(
                    Edge(
                        source=src,
                        target=st.name,
                        kind=EdgeKind.file,
                        variables=sorted(files[src]),
                        reason="; ".join(why[src]),
                    )
                )
                deps[st.name].add(src)

        ancestors: dict[str, set[str]] = {}
        for st in self.steps:
            anc: set[str] = set()
            for dep in deps[st.name]:
                anc |= {dep} | ancestors[dep]
            ancestors[st.name] = anc
        self.check_parallel(ancestors)
        self.check_file_conflicts(ancestors)

        steps = []
        for st in self.steps:
            defs = sorted(
                [
                    *self.role_defs,
                    *st.definitions.values(),
                    *(d for k, d in replay_sorted if k < st.index),
                ],
                key=lambda d: (d.cell, d.line),
            )
            unique: dict[tuple[int, int, str], Definition] = {}
            for d in defs:  # a state setting's import may also be one of the step's own
                unique.setdefault((d.cell, d.line, d.source), d)
            defs = list(unique.values())
            steps.append(
                Step(
                    name=st.name,
                    display_name=st.span.display_name
                    if st.span.role == "step"
                    else "pipeline-metrics",
                    role="metrics" if st.span.role == "metrics" else "step",
                    cells=list(st.span.cells),
                    inputs=sorted(st.inputs),
                    input_sources={n: b.step for n, b in sorted(st.inputs.items()) if b.step},
                    outputs=sorted(st.outputs),
                    parameters=sorted(st.params | role_params),
                    definitions=defs,
                    state_inputs={pv: p for pv, (p, _, _) in sorted(st.state_inputs.items()) if p},
                    state_outputs=sorted(st.state_outputs),
                    metrics=list(st.metrics),
                    depends_on=sorted(deps[st.name], key=order.__getitem__),
                    settings=st.span.settings,
                )
            )
        self.diags.sort(key=lambda d: (d.cell if d.cell is not None else -1, d.line or 0, d.code))
        nb = self.nb
        return Pipeline(
            name=nb.name,
            notebook=nb.path,
            description=nb.description,
            steps=steps,
            edges=edges,
            parameters=self.parameters,
            metrics=self.metrics,
            diagnostics=self.diags,
            image=nb.image,
            experiment=nb.experiment,
            kernel_name=nb.kernel_name,
        )

    def check_parallel(self, ancestors: dict[str, set[str]]) -> None:
        for st in self.steps:
            for name, b in st.inputs.items():
                p = b.step
                if p is None:
                    continue
                for w in self.writers.get(name, []):
                    if w == p or self.by_name[w].index >= st.index:
                        continue
                    anc = ancestors[st.name]
                    if w in anc and p in anc and w not in ancestors[p] and p not in ancestors[w]:
                        cell, line = st.input_at[name]
                        self.diag(
                            "parallel-producers",
                            Severity.warning,
                            cell,
                            line,
                            f"{name!r} is produced by both {w!r} and {p!r}, which have no "
                            f"order between them; {st.name!r} takes {p!r}'s (the later in "
                            "the notebook) — add prev: tags or rename to make it explicit",
                            st.name,
                            [name],
                        )

    def check_file_conflicts(self, ancestors: dict[str, set[str]]) -> None:
        seen: dict[str, tuple[str, int, int]] = {}
        for st in self.steps:
            for p, (cell, line) in st.files_written.items():
                other = seen.get(p)
                if other and other[0] not in ancestors[st.name]:
                    self.diag(
                        "file-conflict",
                        Severity.warning,
                        cell,
                        line,
                        f"{p!r} is also written by step {other[0]!r} (cell {other[1]}), "
                        "which may run at the same time; write distinct files or order "
                        "the steps with prev:",
                        st.name,
                        [p],
                    )
                seen[p] = (st.name, cell, line)


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


def _kfp(name: str) -> str:
    from jupyter_pipeline.notebook import kfp_name

    return kfp_name(name)


def _param_type(value: object) -> ParameterType:
    if isinstance(value, bool):
        return ParameterType.bool
    if isinstance(value, int):
        return ParameterType.int
    if isinstance(value, float):
        return ParameterType.float
    if isinstance(value, str):
        return ParameterType.str
    if isinstance(value, list | tuple | set):
        return ParameterType.list
    if isinstance(value, dict):
        return ParameterType.dict
    return ParameterType.none


def _jsonable(value: object) -> object:
    if isinstance(value, tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes | complex):
        return repr(value)
    return value


def build_pipeline(parsed: ParsedNotebook) -> Pipeline:
    """Analyze a parsed notebook into a Pipeline.

    Raises:
        NotebookError: A cell is not valid Python/IPython.
    """
    return _Analyzer(parsed).run()
