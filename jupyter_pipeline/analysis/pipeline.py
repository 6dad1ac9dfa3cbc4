"""Notebook order → steps with inputs, outputs, edges and diagnostics.

One pass over the cells in notebook order replays what a top-to-bottom run does to global
names. Each step keeps what it binds locally; when it reads or may change a name it did not
surely bind itself, the name is an input, resolved to the last step *before it in notebook
order* that may have changed it. That rule is what makes the pipeline compute what the
notebook computes: an in-place mutation in a sibling step, a conditional rebinding or a
function that rebinds a global through ``global`` all make their step the producer.

The pass is built in layers: its state (:mod:`.bindings`), name events (:mod:`.names`),
calls and what they touch (:mod:`.calls`), assembly into the Pipeline (:mod:`.assemble`).
This module drives it: every cell parsed (memoized per cell, :mod:`.memo`), the roles
(imports/functions cells first, parameters and metrics cells in place, skip cells checked),
then each step's cells event by event.
"""

from __future__ import annotations

import ast
from functools import cached_property

from jupyter_pipeline.analysis.assemble import PipelineAssembly
from jupyter_pipeline.analysis.bindings import Binding, StepState
from jupyter_pipeline.analysis.calls import CallEffects
from jupyter_pipeline.analysis.knowledge import OPAQUE_MAGICS
from jupyter_pipeline.analysis.memo import analyzed_cell, fresh_facts
from jupyter_pipeline.analysis.source import CellSyntaxError
from jupyter_pipeline.model import (
    Definition,
    DefinitionKind,
    Metric,
    Parameter,
    ParameterType,
    Pipeline,
    Severity,
)
from jupyter_pipeline.notebook import NotebookError, ParsedNotebook, Span

__all__ = ["build_pipeline"]


class _Analyzer(CallEffects, PipelineAssembly):
    """One analysis: parse every cell (memoized), replay the notebook, assemble."""

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
                st = StepState(span=span, index=len(self.steps))
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

    def cell(self, st: StepState, i: int) -> None:
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
