"""What the notebook-order pass keeps: each name's binding, each step's state, the
diagnostics — and the process-wide state statements every layer of the pass records.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field

from jupyter_pipeline.analysis.facts import CellFacts, Cond, DefInfo
from jupyter_pipeline.analysis.source import ParsedCell
from jupyter_pipeline.model import (
    Definition,
    DefinitionKind,
    Diagnostic,
    Metric,
    Parameter,
    Severity,
)
from jupyter_pipeline.notebook import ParsedNotebook, Span

__all__ = ["Binding", "PassState", "StepState"]


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
class StepState:
    """What one step has done so far in the pass (and, at the end, what it needs and makes)."""

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


class PassState:
    """The notebook-order pass's state: the bindings every name has so far (``env``), the
    steps, what each cell does (``facts``) and the diagnostics.

    The pass itself is built in layers on it: name events (:mod:`.names`), calls and
    what they touch (:mod:`.calls`), assembly into a Pipeline (:mod:`.assemble`), driven
    cell by cell by :mod:`.pipeline`.
    """

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
        self.steps: list[StepState] = []
        self.by_name: dict[str, StepState] = {}
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
        """Report a diagnostic (once: the same code, place, names and message are one)."""
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

    def current(self, st: StepState, name: str) -> Binding | None:
        """``name``'s binding at this point of step ``st``: the step's own, else the notebook's."""
        if name in st.local and (name in st.sure or name in st.maybe):
            return st.local[name]
        return self.env.get(name)

    def uncertain(self, cell: int) -> None:
        """From ``cell`` on, names may exist that no visible code binds (star import, magic)."""
        if self.uncertain_from is None or cell < self.uncertain_from:
            self.uncertain_from = cell

    def state_statement(
        self, st: StepState, cell: int, line: int, source: str, cond: Cond | bool, what: str
    ) -> None:
        """A statement setting process-wide state (``what``): replayed at the start of later
        steps, with the imports it names, when it is a top-level statement; else a warning."""
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
