"""Nested scopes: what calling a function, lambda or class (or running a comprehension) reads
and changes in the global scope, summarized from its body (:class:`FuncSummary`); and the AST
helpers the per-cell analysis shares with it.

Function, lambda, class and comprehension scopes do not leak: their bodies are summarized
into their free reads, the globals they rebind (``global``), the objects they may change in
place, the calls they make and which parameters they change or evaluate as code.
"""

from __future__ import annotations

import ast
from typing import Any

from jupyter_pipeline.analysis.dyncode import (
    class_code_use,
    function_code_use,
    own_namespace,
    param_names,
)
from jupyter_pipeline.analysis.facts import CallInfo, FuncSummary
from jupyter_pipeline.analysis.knowledge import FILE_METHODS, PURE_METHODS
from jupyter_pipeline.analysis.source import parse_code_string

__all__ = [
    "ScopeBindings",
    "call_info",
    "class_summary",
    "comprehension_summary",
    "dotted",
    "root_name",
    "str_const",
    "summarize_scope",
    "target_names",
]


def root_name(node: ast.AST) -> str | None:
    """The variable an expression like ``a.b[c].d`` hangs from (``a``)."""
    while True:
        if isinstance(node, ast.Name):
            return node.id
        if isinstance(node, ast.Attribute | ast.Subscript | ast.Starred):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            # `df.drop(...).fillna(...)`: still rooted in df for receiver purposes
            node = node.func.value
        else:
            return None


def dotted(node: ast.AST) -> tuple[str, ...]:
    """The dotted name an expression spells (``("np", "random", "seed")``), or ``()``."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return tuple(reversed(parts))
    return ()


def str_const(node: ast.AST | None) -> str | None:
    """The value of a string literal, or None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def target_names(target: ast.AST) -> list[str]:
    """The names an assignment target binds (``a, (b, *c)`` → a, b, c)."""
    out: list[str] = []
    for n in ast.walk(target):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            out.append(n.id)
    return out


class ScopeBindings(ast.NodeVisitor):
    """Names a function scope binds (locals) and declares global/nonlocal."""

    def __init__(self) -> None:
        self.bound: set[str] = set()
        self.globals: set[str] = set()
        self.nonlocals: set[str] = set()

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Store | ast.Del):
            self.bound.add(node.id)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.bound.add(node.name)
        for d in node.decorator_list:
            self.visit(d)
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.bound.add(node.name)
        for d in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(d)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)

    def _comp(self, node: Any) -> None:
        # Only walrus targets inside a comprehension bind in the enclosing scope.
        for n in ast.walk(node):
            if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name):
                self.bound.add(n.target.id)
        self.visit(node.generators[0].iter)

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comp

    def visit_Import(self, node: ast.Import | ast.ImportFrom) -> None:
        for a in node.names:
            if a.name != "*":
                self.bound.add((a.asname or a.name).split(".")[0])

    visit_ImportFrom = visit_Import  # type: ignore[assignment]

    def visit_Global(self, node: ast.Global) -> None:
        self.globals.update(node.names)

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self.nonlocals.update(node.names)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchAs(self, node: ast.MatchAs) -> None:
        if node.name:
            self.bound.add(node.name)
        self.generic_visit(node)

    def visit_MatchStar(self, node: ast.MatchStar) -> None:
        if node.name:
            self.bound.add(node.name)

    def visit_MatchMapping(self, node: ast.MatchMapping) -> None:
        if node.rest:
            self.bound.add(node.rest)
        self.generic_visit(node)


def _positional_params(args: ast.arguments) -> list[str]:
    return [a.arg for a in args.posonlyargs + args.args]


class _BodyEffects(ast.NodeVisitor):
    """Collects reads of free names and effects on them inside one nested scope.

    ``local`` holds the scope's own names; every other name loaded is free (global, or bound
    in an enclosing function, which the caller filters). Nested scopes are summarized
    recursively and their free names bubble up.
    """

    def __init__(self, local: set[str], params: set[str], global_decl: set[str]):
        self.local = local
        self.params = params
        self.global_decl = global_decl
        self.summary = FuncSummary()

    def _free(self, name: str) -> bool:
        return name not in self.local or name in self.global_decl

    def _mutate(self, node: ast.AST) -> None:
        root = root_name(node)
        if root is None:
            return
        if root in self.params and root not in self.global_decl:
            self.summary.mutated_params.add(root)
        elif self._free(root):
            self.summary.mutates.add(root)

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if self._free(node.id):
                self.summary.reads.add(node.id)
        elif node.id in self.global_decl:
            self.summary.writes.add(node.id)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for t in node.targets:
            self._store_target(t)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self._store_target(node.target)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if isinstance(node.target, ast.Name):
            name = node.target.id
            if self._free(name):
                self.summary.reads.add(name)
            if name in self.global_decl:
                self.summary.writes.add(name)
            elif name in self.params:
                self.summary.mutated_params.add(name)  # `p += [x]` extends a list in place
        else:
            self.visit(node.target)
            self._mutate(node.target)

    def visit_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            if isinstance(t, ast.Name):
                if t.id in self.global_decl:
                    self.summary.writes.add(t.id)
            else:
                self.visit(t)
                self._mutate(t)

    def _store_target(self, t: ast.AST) -> None:
        if isinstance(t, ast.Name):
            if t.id in self.global_decl:
                self.summary.writes.add(t.id)
        elif isinstance(t, ast.Tuple | ast.List):
            for e in t.elts:
                self._store_target(e)
        elif isinstance(t, ast.Starred):
            self._store_target(t.value)
        else:  # attribute / subscript store: reads the container, mutates it
            self.visit(t)
            self._mutate(t)

    def visit_Call(self, node: ast.Call) -> None:
        self.generic_visit(node)
        path = dotted(node.func)
        if isinstance(node.func, ast.Attribute):
            method = node.func.attr
            inplace = any(
                k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value
                for k in node.keywords
            )
            if method not in PURE_METHODS or inplace:
                self._mutate(node.func.value)
        root = path[0] if path else None
        if (root is not None and self._free(root)) or (
            # a method of a temporary writing or reading a file (`pd.DataFrame(d).to_csv(…)`)
            root is None and isinstance(node.func, ast.Attribute) and node.func.attr in FILE_METHODS
        ):
            self.summary.calls.append(call_info(node, path))
        if path in (("eval",), ("exec",)) and node.args and not own_namespace(node):
            # A literal evaluated inside the body reads its names like the body itself
            # (locals included: eval sees the function's own scope first).
            code = str_const(node.args[0])
            tree = parse_code_string(code) if code is not None else None
            for n in ast.walk(tree) if tree is not None else ():
                if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and self._free(n.id):
                    self.summary.reads.add(n.id)

    def _nested(self, node: ast.AST, args: ast.arguments | None, body: list[ast.stmt]) -> None:
        inner = summarize_scope(args, body)
        self.summary.writes |= inner.writes  # `global x` inside a nested def is still global
        self._absorb(inner)

    def _absorb(self, inner: FuncSummary) -> None:
        """Take in what a nested scope reads and changes of the names free here."""
        for name in inner.reads:
            if self._free(name):
                self.summary.reads.add(name)
        for name in inner.mutates:
            if name in self.params:
                self.summary.mutated_params.add(name)
            elif self._free(name):
                self.summary.mutates.add(name)
        self.summary.calls += inner.calls

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for d in node.decorator_list:
            self.visit(d)
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)
        self._nested(node, node.args, node.body)

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Lambda(self, node: ast.Lambda) -> None:
        for d in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
            self.visit(d)
        self._nested(node, node.args, [ast.Expr(node.body)])

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        for d in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(d)
        self._nested(node, None, node.body)

    def _comp(self, node: Any) -> None:
        self.visit(node.generators[0].iter)
        # (a walrus inside binds in this function's scope, not globally: no writes)
        self._absorb(comprehension_summary(node))

    visit_ListComp = visit_SetComp = visit_GeneratorExp = visit_DictComp = _comp

    def visit_Global(self, node: ast.Global) -> None:
        pass

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        pass


def summarize_scope(args: ast.arguments | None, body: list[ast.stmt]) -> FuncSummary:
    """Summarize a function/class/lambda body: its free reads and global effects."""
    binder = ScopeBindings()
    for stmt in body:
        binder.visit(stmt)
    params = set(param_names(args)) if args else set()
    local = (binder.bound | params | binder.nonlocals) - binder.globals
    effects = _BodyEffects(local, params, binder.globals)
    for stmt in body:
        effects.visit(stmt)
    s = effects.summary
    # Nonlocal names belong to an enclosing function, not to the notebook's globals.
    s.reads -= binder.nonlocals
    s.param_names = _positional_params(args) if args else []
    positions = {n: i for i, n in enumerate(s.param_names)}
    s.mutated_params = {positions.get(str(p), p) for p in s.mutated_params}
    if args is not None:
        _signature(s, args)
        use = function_code_use(args, body)
        s.code_params, s.dynamic = use.params, use.dynamic
    return s


def _signature(s: FuncSummary, args: ast.arguments) -> None:
    s.vararg = args.vararg.arg if args.vararg else None
    s.kwonly = [a.arg for a in args.kwonlyargs]
    s.kwarg = args.kwarg.arg if args.kwarg else None


def comprehension_summary(node: Any) -> FuncSummary:
    """Free reads of a comprehension: its targets are local, everything else is read."""
    local: set[str] = set()
    for gen in node.generators:
        local.update(target_names(gen.target))
    walrus = {
        n.target.id
        for n in ast.walk(node)
        if isinstance(n, ast.NamedExpr) and isinstance(n.target, ast.Name)
    }
    effects = _BodyEffects(local - walrus, set(), walrus)
    # The first iterable is evaluated in the enclosing scope (visited by the caller).
    for k, gen in enumerate(node.generators):
        if k:
            effects.visit(gen.iter)
        for cond in gen.ifs:
            effects.visit(cond)
    for part in ("elt", "key", "value"):
        if hasattr(node, part):
            effects.visit(getattr(node, part))
    return effects.summary


def call_info(node: ast.Call, path: tuple[str, ...]) -> CallInfo:
    """A call as written (its dotted callee ``path``, arguments' roots and literals)."""
    info = CallInfo(path=path)
    if isinstance(node.func, ast.Attribute):
        info.method = node.func.attr
        inner = node.func.value
        if isinstance(inner, ast.Call) and inner.args:
            callee, first = dotted(inner.func), str_const(inner.args[0])
            if callee and first is not None:
                info.receiver = (callee, first)
    for a in node.args:
        info.args.append(root_name(a))
        info.strings.append(str_const(a))
    for k in node.keywords:
        if k.arg is None:
            continue
        info.kwargs[k.arg] = root_name(k.value)
        s = str_const(k.value)
        if s is not None:
            info.kwstrings[k.arg] = s
        if k.arg == "inplace" and isinstance(k.value, ast.Constant) and k.value.value:
            info.inplace = True
    return info


def class_summary(node: ast.ClassDef) -> FuncSummary:
    """What using a class may do: the union of its methods' effects.

    Methods run later, on instances; their free reads are charged to whoever uses the class.
    ``__init__``'s parameter mutations map onto the constructor call's arguments.
    """
    out = FuncSummary()
    for stmt in node.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            s = summarize_scope(stmt.args, stmt.body)
            out.reads |= s.reads
            out.writes |= s.writes
            out.mutates |= s.mutates
            out.calls += s.calls
            if stmt.name == "__init__":
                # Position 0 is `self`, the new instance: not an argument of the constructor call.
                out.mutated_params = {
                    p - 1 if isinstance(p, int) else p for p in s.mutated_params if p != 0
                }
                out.param_names = s.param_names[1:]
                _signature(out, stmt.args)
            elif not any(
                isinstance(d, ast.Name) and d.id == "staticmethod" for d in stmt.decorator_list
            ):
                out.methods[stmt.name] = s
    use = class_code_use(node)
    out.code_params, out.dynamic = use.params, use.dynamic
    return out
