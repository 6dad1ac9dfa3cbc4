"""Per-cell scope analysis: the ordered events a cell's top level performs on global names.

A cell becomes a list of :class:`Event` s in evaluation order: reads, binds (data or
definition), deletes, possible mutations, calls (kept whole, since what a call does depends on
what its callee is bound to *at that point of the notebook*, which only the notebook-order pass
in :mod:`jupyter_pipeline.analysis.pipeline` knows), magics, names used inside strings.
Function, lambda, class and comprehension scopes do not leak: their bodies are summarized into
what they read and change in the global scope when called (:mod:`.scopes`). The event types
are in :mod:`.facts`.
"""

from __future__ import annotations

import ast
import re
from itertools import count
from typing import Any

from jupyter_pipeline.analysis.facts import (
    CallInfo,
    CellFacts,
    Cond,
    DefInfo,
    Event,
    FuncSummary,
)
from jupyter_pipeline.analysis.knowledge import CODE_LINE_MAGICS, PURE_METHODS, QUERY_METHODS
from jupyter_pipeline.analysis.scopes import (
    ScopeBindings,
    call_info,
    class_summary,
    comprehension_summary,
    dotted,
    root_name,
    str_const,
    summarize_scope,
    target_names,
)
from jupyter_pipeline.analysis.source import ParsedCell, parse_code_string

# (the event types are re-exported: they were defined here first)
__all__ = ["CallInfo", "CellFacts", "DefInfo", "Event", "FuncSummary", "analyze_cell"]

# A conditional block's id (see facts.Cond): process-wide, so ids of cells analyzed at
# different times (memoized facts) never collide.
_context_ids = count(1)

_QUERY_REF = re.compile(r"@([A-Za-z_][A-Za-z0-9_]*)")


# ----------------------------------------------------------------------------------------
# The top level of a cell: ordered events.
# ----------------------------------------------------------------------------------------


class _CellVisitor:
    def __init__(self, parsed: ParsedCell, statement_ids: Any):
        self.parsed = parsed
        self.events: list[Event] = []
        self.offset = parsed.line_offset
        self._ids = statement_ids

    # -- helpers
    def line(self, node: ast.AST) -> int:
        return int(getattr(node, "lineno", 1)) + self.offset

    def emit(
        self, op: str, name: str, node: ast.AST, cond: Cond, kind: str = "data", info: Any = None
    ) -> None:
        self.events.append(Event(op, name, self.line(node), cond, kind, info))

    def segment(self, node: ast.AST) -> str:
        start = node
        decorators = getattr(node, "decorator_list", None)
        if decorators:
            first = min(decorators, key=lambda d: (d.lineno, d.col_offset))
            lines = self.parsed.code.splitlines(keepends=True)
            end = getattr(node, "end_lineno", None) or node.lineno  # type: ignore[attr-defined]
            return "".join(lines[first.lineno - 1 : end]).rstrip("\n")
        return ast.get_source_segment(self.parsed.code, start) or ast.unparse(node)

    # -- statements
    def stmts(self, body: list[ast.stmt], cond: Cond) -> None:
        for s in body:
            self.stmt(s, cond)

    def stmt(self, s: ast.stmt, cond: Cond) -> None:
        method = getattr(self, "s_" + type(s).__name__, None)
        if method is not None:
            method(s, cond)
        else:
            self.generic_stmt(s, cond)

    def generic_stmt(self, s: ast.AST, cond: Cond) -> None:
        for child in ast.iter_child_nodes(s):
            if isinstance(child, ast.stmt):
                self.stmt(child, cond)
            elif isinstance(child, ast.expr):
                self.expr(child, cond)
            else:
                self.generic_stmt(child, cond)

    def s_Expr(self, s: ast.Expr, cond: Cond) -> None:
        if isinstance(s.value, ast.Call) and not cond:
            self.expr(s.value, cond, statement=s)
        else:
            self.expr(s.value, cond)

    def s_Assign(self, s: ast.Assign, cond: Cond) -> None:
        if (
            len(s.targets) == 1
            and isinstance(s.targets[0], ast.Name)
            and isinstance(s.value, ast.Lambda)
        ):
            # `f = lambda …` is a function definition: replayed where used, so it sees that
            # step's globals as it would in the notebook (a pickled lambda keeps old ones).
            info = DefInfo(
                self.segment(s),
                reads=self._def_reads(s.value, cond),
                summary=summarize_scope(s.value.args, [ast.Expr(s.value.body)]),
                statement_id=self._ids(),
            )
            self.emit("bind", s.targets[0].id, s.targets[0], cond, "function", info)
            return
        self.expr(s.value, cond)
        for t in s.targets:
            self.target(t, cond, s)
        self.aliases(s.targets, s.value, s, cond)

    def aliases(self, targets: list[ast.expr], value: ast.expr, s: ast.AST, cond: Cond) -> None:
        """Record names that now share one object: changing one changes the others.

        ``b = a`` and ``b = a.attr`` make b an alias of a; ``data = [df1, df2]`` holds the
        frames themselves; ``fig, ax = plt.subplots()`` unpacks one returned object graph;
        ``a = b = []`` binds one object to both; ``x, y = y, x`` pairs the elements.
        """
        for target in targets:
            if (
                isinstance(target, ast.Tuple | ast.List)
                and isinstance(value, ast.Tuple | ast.List)
                and len(target.elts) == len(value.elts)
                and not any(isinstance(e, ast.Starred) for e in target.elts + value.elts)
            ):
                for t, v in zip(target.elts, value.elts, strict=True):
                    self.aliases([t], v, s, cond)
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if _immutable_literal(value):
            for name in names:  # nothing can change it in place: it never needs to travel
                self.emit("immutable", name, s, cond)
            return
        for source in _held_names(value):
            for name in names:
                if name != source:
                    self.emit("alias", name, s, cond, info=source)
        if isinstance(value, ast.Call) and len(targets) == 1:
            target = targets[0]
            if isinstance(target, ast.Name) and isinstance(value.func, ast.Name):
                # `k = Reader()`: if Reader is a notebook class, k's methods read its globals
                # (and may evaluate what the constructor was given: kept with the call)
                ctor = call_info(value, (value.func.id,))
                self.emit("instance", target.id, s, cond, info=(value.func.id, ctor))
            if isinstance(target, ast.Tuple | ast.List):
                parts = [e.id for e in target.elts if isinstance(e, ast.Name)]
                for name in parts[1:]:
                    self.emit("alias", name, s, cond, info=parts[0])
        for name in names[1:]:  # a = b = value
            self.emit("alias", name, s, cond, info=names[0])

    def s_AnnAssign(self, s: ast.AnnAssign, cond: Cond) -> None:
        if s.value is not None:
            self.expr(s.value, cond)
            self.target(s.target, cond, s)
        if s.simple and isinstance(s.target, ast.Name):
            self.expr(s.annotation, cond)

    def s_AugAssign(self, s: ast.AugAssign, cond: Cond) -> None:
        self.expr(s.value, cond)
        if isinstance(s.target, ast.Name):
            self.emit("read", s.target.id, s, cond)
            # `x += …` may extend x in place (lists) or rebind it: either way x changes.
            self.emit("mutate", s.target.id, s, cond)
        else:
            self.expr(s.target, cond, load_only=True)
            root = root_name(s.target)
            if root:
                self.emit("mutate", root, s, cond, info=self.segment(s))

    def s_Delete(self, s: ast.Delete, cond: Cond) -> None:
        for t in s.targets:
            if isinstance(t, ast.Name):
                self.emit("del", t.id, t, cond)
            else:
                self.expr(t, cond, load_only=True)
                root = root_name(t)
                if root:
                    self.emit("mutate", root, t, cond, info=self.segment(s))

    def target(self, t: ast.AST, cond: Cond, stmt: ast.AST) -> None:
        if isinstance(t, ast.Name):
            self.emit("bind", t.id, t, cond)
        elif isinstance(t, ast.Tuple | ast.List):
            for e in t.elts:
                self.target(e, cond, stmt)
        elif isinstance(t, ast.Starred):
            self.target(t.value, cond, stmt)
        else:
            self.expr(t, cond, load_only=True)
            root = root_name(t)
            if root:
                self.emit("mutate", root, t, cond, info=self.segment(stmt))

    def s_Import(self, s: ast.Import, cond: Cond) -> None:
        sid = self._ids()
        src = self.segment(s)
        for a in s.names:
            if a.asname:
                name, origin = a.asname, a.name
            else:
                name = origin = a.name.split(".")[0]
            self.emit(
                "bind", name, s, cond, "import", DefInfo(src, origin=origin, statement_id=sid)
            )

    def s_ImportFrom(self, s: ast.ImportFrom, cond: Cond) -> None:
        sid = self._ids()
        module = "." * (s.level or 0) + (s.module or "")
        src = self.segment(s)
        for a in s.names:
            if a.name == "*":
                self.emit(
                    "star", module, s, cond, info=DefInfo(src, origin=module, statement_id=sid)
                )
                continue
            name = a.asname or a.name
            origin = f"{module}.{a.name}" if module else a.name
            self.emit(
                "bind", name, s, cond, "import", DefInfo(src, origin=origin, statement_id=sid)
            )

    def _def_reads(self, node: Any, cond: Cond) -> list[str]:
        """What a def, class or lambda reads when it is defined (decorators, defaults…)."""
        before = len(self.events)
        for d in getattr(node, "decorator_list", ()):  # (a lambda has none)
            self.expr(d, cond)
        if isinstance(node, ast.ClassDef):
            for b in node.bases + [k.value for k in node.keywords]:
                self.expr(b, cond)
        else:
            a = node.args
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                self.expr(d, cond)
            for arg in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg]:
                if arg is not None and arg.annotation is not None:  # (never in a lambda)
                    self.expr(arg.annotation, cond)
            if getattr(node, "returns", None) is not None:
                self.expr(node.returns, cond)
        return [e.name for e in self.events[before:] if e.op == "read"]

    def s_FunctionDef(self, s: ast.FunctionDef | ast.AsyncFunctionDef, cond: Cond) -> None:
        reads = self._def_reads(s, cond)
        info = DefInfo(
            self.segment(s),
            reads=reads,
            summary=summarize_scope(s.args, s.body),
            statement_id=self._ids(),
        )
        self.emit("bind", s.name, s, cond, "function", info)

    s_AsyncFunctionDef = s_FunctionDef

    def s_ClassDef(self, s: ast.ClassDef, cond: Cond) -> None:
        reads = self._def_reads(s, cond)
        # The class body runs now, in its own scope: names it reads before binding are globals.
        body_local: set[str] = set()
        for stmt in s.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                for d in stmt.decorator_list:
                    reads += self._free_reads(d, body_local, cond)
                if not isinstance(stmt, ast.ClassDef):
                    for d in stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]:
                        reads += self._free_reads(d, body_local, cond)
                body_local.add(stmt.name)
                continue
            reads += self._free_reads(stmt, body_local, cond)
            binder = ScopeBindings()
            binder.visit(stmt)
            body_local |= binder.bound
        info = DefInfo(
            self.segment(s), reads=reads, summary=class_summary(s), statement_id=self._ids()
        )
        self.emit("bind", s.name, s, cond, "class", info)

    def _free_reads(self, node: ast.AST, local: set[str], cond: Cond) -> list[str]:
        out = []
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and n.id not in local:
                out.append(n.id)
                self.emit("read", n.id, n, cond)
        return out

    def s_If(self, s: ast.If, cond: Cond) -> None:
        self.expr(s.test, cond)
        sure: list[set[str]] = []
        for body in (s.body, s.orelse):
            self.stmts(body, _sub(cond))
            sure.append(_surely_bound(body))
        # A name both branches surely bind is surely bound after the `if`.
        for name in sorted(sure[0] & sure[1]):
            self.emit("bind", name, s, cond, "merge")

    def s_For(self, s: ast.For | ast.AsyncFor, cond: Cond) -> None:
        self.expr(s.iter, cond)
        body = _sub(cond)  # the target is bound whenever the body runs
        self.target(s.target, body, s)
        # `for df in data:` — each df is an element of data: changing df changes data's.
        for source in _iterated_names(s.iter):
            for name in target_names(s.target):
                if name != source:
                    self.emit("alias", name, s, body, info=source)
        self.stmts(s.body, body)
        self.stmts(s.orelse, _sub(cond))

    s_AsyncFor = s_For

    def s_While(self, s: ast.While, cond: Cond) -> None:
        self.expr(s.test, cond)
        body = _sub(cond)
        self.stmts(s.body, body)
        self.expr(s.test, body)
        self.stmts(s.orelse, _sub(cond))

    def s_With(self, s: ast.With | ast.AsyncWith, cond: Cond) -> None:
        for item in s.items:
            self.expr(item.context_expr, cond)
            if item.optional_vars is not None:
                self.target(item.optional_vars, cond, s)
        self.stmts(s.body, cond)

    s_AsyncWith = s_With

    def s_Try(self, s: Any, cond: Cond) -> None:
        sure = []
        body = _sub(cond)
        self.stmts(s.body, body)
        self.stmts(s.orelse, body)
        sure.append(_surely_bound(s.body + s.orelse))
        for h in s.handlers:
            handler = _sub(cond)
            if h.type is not None:
                self.expr(h.type, handler)
            if h.name:
                self.emit("bind", h.name, h, handler)
            self.stmts(h.body, handler)
            if h.name:
                self.emit("del", h.name, h, handler)  # Python deletes `except … as e` names
            sure.append(_surely_bound(h.body))
        for name in sorted(set.intersection(*sure)) if sure else []:
            self.emit("bind", name, s, cond, "merge")
        self.stmts(s.finalbody, cond)

    s_TryStar = s_Try

    def s_Match(self, s: Any, cond: Cond) -> None:
        self.expr(s.subject, cond)
        sure: list[set[str]] = []
        for case in s.cases:
            inner = _sub(cond)
            captured: set[str] = set()
            for n in ast.walk(case.pattern):
                if isinstance(n, ast.MatchValue | ast.MatchClass):
                    self.generic_stmt(n, inner)
                name = getattr(n, "name", None) or getattr(n, "rest", None)
                if isinstance(name, str):
                    self.emit("bind", name, case.pattern, inner)
                    captured.add(name)
            if case.guard is not None:
                self.expr(case.guard, inner)
            self.stmts(case.body, inner)
            sure.append(captured | _surely_bound(case.body))
        last = s.cases[-1] if s.cases else None
        if (
            last is not None
            and isinstance(last.pattern, ast.MatchAs)
            and last.pattern.pattern is None
            and last.guard is None
        ):
            # An irrefutable last case (`case _:`): one case surely runs.
            for name in sorted(set.intersection(*sure)):
                self.emit("bind", name, s, cond, "merge")

    def s_Global(self, s: ast.Global, cond: Cond) -> None:
        pass

    s_Nonlocal = s_Global

    # -- expressions, in evaluation order
    def expr(
        self, e: ast.AST, cond: Cond, statement: ast.AST | None = None, load_only: bool = False
    ) -> None:
        if isinstance(e, ast.Name):
            if isinstance(e.ctx, ast.Load) or load_only:
                self.emit("read", e.id, e, cond)
            return
        if isinstance(e, ast.Call):
            self.call(e, cond, statement)
            return
        if isinstance(e, ast.NamedExpr):
            self.expr(e.value, cond)
            self.emit("bind", e.target.id, e.target, cond)
            return
        if isinstance(e, ast.Lambda):
            a = e.args
            for d in a.defaults + [d for d in a.kw_defaults if d is not None]:
                self.expr(d, cond)
            # A lambda is usually called where it is written (`df.apply(lambda r: …)`):
            # charge its free reads here.
            s = summarize_scope(a, [ast.Expr(e.body)])
            for name in sorted(s.reads):
                self.emit("read", name, e, cond)
            for name in sorted(s.mutates):
                self.emit("mutate", name, e, cond)
            return
        if isinstance(e, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp):
            self.expr(e.generators[0].iter, cond)
            s = comprehension_summary(e)
            for name in sorted(s.reads):
                self.emit("read", name, e, cond)
            for name in sorted(s.mutates):
                self.emit("mutate", name, e, cond)
            for call in s.calls:
                root = call.path[0] if call.path else ""
                self.events.append(Event("call", root, self.line(e), cond, info=call))
            for n in ast.walk(e):
                if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
                    self.emit("bind", n.target.id, n, _sub(cond))
            return
        for child in ast.iter_child_nodes(e):
            if isinstance(child, ast.expr):
                self.expr(
                    child,
                    cond,
                    load_only=load_only and isinstance(e, ast.Attribute | ast.Subscript),
                )
            elif isinstance(child, ast.comprehension | ast.keyword | ast.arguments):
                self.generic_stmt(child, cond)

    def call(self, e: ast.Call, cond: Cond, statement: ast.AST | None) -> None:
        path = dotted(e.func)
        if self.magic(e, path, cond):
            return
        self.expr(e.func, cond)
        for a in e.args:
            self.expr(a, cond)
        for k in e.keywords:
            self.expr(k.value, cond)
        info = call_info(e, path)
        if statement is not None:
            info.statement = True
            info.source = self.segment(statement)
        root = path[0] if path else (root_name(e.func) or "")
        self.events.append(Event("call", root, self.line(e), cond, info=info))
        if isinstance(e.func, ast.Attribute):
            receiver = root_name(e.func.value)
            method = e.func.attr
            if receiver and (method not in PURE_METHODS or info.inplace):
                self.emit("mutate", receiver, e, cond, kind="method", info=method)
            if receiver and method in _CONTAINER_INSERTS:
                # `rows.append(row)`: the container now holds row's object itself
                for held in [n for a in e.args for n in _held_names(a)]:
                    if held != receiver:
                        self.emit("alias", receiver, e, cond, info=held)
            if method in QUERY_METHODS and info.strings and info.strings[0]:
                for ref in _QUERY_REF.findall(info.strings[0]):
                    self.emit("string", ref, e, cond, info=method)
        elif path in (("eval",), ("exec",)):
            code = info.strings[0] if info.strings else None
            tree = parse_code_string(code) if code is not None else None
            if tree is None:
                self.emit("dynamic", path[0], e, cond)
            else:
                for n in ast.walk(tree):
                    if isinstance(n, ast.Name):
                        if isinstance(n.ctx, ast.Load):
                            self.emit("string", n.id, e, cond, info=path[0])
                        else:
                            self.emit("bind", n.id, e, cond)
        elif path in (("globals",), ("locals",), ("vars",)):
            self.emit("dynamic", path[0], e, cond)

    def magic(self, e: ast.Call, path: tuple[str, ...], cond: Cond) -> bool:
        """Handle ``get_ipython().run_line_magic(name, arg)`` and friends."""
        if not (isinstance(e.func, ast.Attribute) and isinstance(e.func.value, ast.Call)):
            return False
        inner = e.func.value
        if not (isinstance(inner.func, ast.Name) and inner.func.id == "get_ipython"):
            return False
        kind = e.func.attr
        args = [str_const(a) for a in e.args]
        if kind == "run_line_magic" and len(args) >= 2 and args[0] is not None:
            name, arg = args[0], args[1] or ""
            if name in CODE_LINE_MAGICS and arg.strip():
                code = arg
                if name == "capture":  # `%capture out` is not code; treat it like the cell magic
                    self.emit("bind", arg.split()[-1], e, cond)
                    return True
                tree = parse_code_string(code.lstrip("-").strip() if name == "time" else code)
                if tree is None and name in ("timeit", "prun"):
                    # strip options such as `-n 10 -r 3`
                    tree = parse_code_string(re.sub(r"^(\s*-\w+(\s+\S+)?)*\s*", "", code))
                if tree is not None:
                    sub = _CellVisitor(ParsedCell(tree=tree, code=code, line_offset=0), self._ids)
                    sub.stmts(tree.body, _sub(cond) if name in ("timeit", "prun") else cond)
                    for ev in sub.events:
                        ev.line = self.line(e)
                        self.events.append(ev)
                    return True
            self.emit("magic", name, e, cond, info=arg)
            return True
        if kind == "run_cell_magic":
            self.emit("magic", args[0] or "", e, cond, info=args[1] if len(args) > 1 else "")
            return True
        if kind in ("getoutput", "system"):
            self.emit(
                "magic", "!" if kind == "system" else "!=", e, cond, info=args[0] if args else ""
            )
            return True
        return False


_CONTAINER_INSERTS = frozenset({"append", "extend", "insert", "add", "update", "setdefault"})
_ITERATING = frozenset({"enumerate", "zip", "reversed", "iter", "sorted", "list", "tuple"})


def _held_names(value: ast.expr) -> list[str]:
    """Variables whose objects a value expression holds (not copies of them).

    A subscript counts too: ``view = arr[1:3]`` is a numpy view, ``row = rows[0]`` an element;
    where it is a copy (pandas columns under copy-on-write) the group only costs a transfer.
    """
    if isinstance(value, ast.Name | ast.Attribute | ast.Subscript):
        root = root_name(value)
        return [root] if root else []
    if isinstance(value, ast.List | ast.Tuple | ast.Set):
        return [n for e in value.elts for n in _held_names(e)]
    if isinstance(value, ast.Dict):
        return [n for e in value.values for n in _held_names(e)]
    if isinstance(value, ast.Starred):
        return _held_names(value.value)
    return []


def _iterated_names(it: ast.expr) -> list[str]:
    """Containers a ``for`` loop takes its elements from."""
    if isinstance(it, ast.Call):
        if isinstance(it.func, ast.Name) and it.func.id in _ITERATING:
            return [n for a in it.args for n in _iterated_names(a)]
        if isinstance(it.func, ast.Attribute) and it.func.attr in ("items", "values"):
            root = root_name(it.func.value)
            return [root] if root else []
    return _held_names(it)


def _immutable_literal(node: ast.expr) -> bool:
    """A literal of an immutable type (number, string, bytes, None, tuple of those)."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(_immutable_literal(e) for e in node.elts)
    return isinstance(node, ast.JoinedStr)


def _sub(cond: Cond) -> Cond:
    """A fresh condition context nested in ``cond``."""
    return (*cond, next(_context_ids))


def _surely_bound(body: list[ast.stmt]) -> set[str]:
    """Names a block binds on every path that reaches its end (straight-line statements only)."""
    out: set[str] = set()
    for s in body:
        if isinstance(s, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = s.targets if isinstance(s, ast.Assign) else [s.target]
            for t in targets:
                out.update(target_names(t))
        elif isinstance(s, ast.Import | ast.ImportFrom):
            out.update((a.asname or a.name).split(".")[0] for a in s.names if a.name != "*")
        elif isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(s.name)
        elif isinstance(s, ast.With | ast.AsyncWith):
            for item in s.items:
                if item.optional_vars is not None:
                    out.update(target_names(item.optional_vars))
            out |= _surely_bound(s.body)
        elif isinstance(s, ast.If):
            out |= _surely_bound(s.body) & _surely_bound(s.orelse)
        elif isinstance(s, ast.Delete):
            for t in s.targets:
                out.difference_update(target_names(t))
        elif isinstance(s, ast.Return | ast.Raise | ast.Continue | ast.Break):
            break
    return out


def analyze_cell(parsed: ParsedCell, statement_ids: Any) -> CellFacts:
    """Turn a parsed cell into its ordered events.

    Args:
        parsed: The cell as Python (see :func:`jupyter_pipeline.analysis.source.parse_cell`).
        statement_ids: A callable returning a fresh integer per definition statement.
    """
    v = _CellVisitor(parsed, statement_ids)
    if parsed.cell_magic == "capture" and parsed.cell_magic_args:
        args = [a for a in parsed.cell_magic_args.split() if not a.startswith("-")]
        v.stmts(parsed.tree.body, ())
        if args:
            v.events.append(Event("bind", args[0], 1))
    elif parsed.cell_magic in ("timeit", "prun"):
        v.stmts(parsed.tree.body, _sub(()))  # %%timeit runs the body in a loop
    else:
        v.stmts(parsed.tree.body, ())
    if parsed.opaque:
        v.events.append(Event("magic", parsed.cell_magic or "", 1, info=parsed.cell_magic_args))
    return CellFacts(
        events=v.events,
        opaque_magic=parsed.cell_magic if parsed.opaque else None,
        cell_magic=parsed.cell_magic,
        cell_magic_args=parsed.cell_magic_args,
    )
