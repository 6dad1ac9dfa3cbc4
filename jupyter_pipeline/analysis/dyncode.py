"""Parameters a notebook function evaluates as code (``eval``, ``exec``, ``globals()[…]``).

A tutorial helper such as ``def show(name): return eval(name)`` — or a class whose
``__repr__`` evaluates the names given to its constructor — reads whatever global its
argument names, at call (or display) time, in the kernel that runs it. Whoever calls it with a
string literal has therefore written code: ``show('x')`` reads ``x``. This module finds, for
one function or class, which parameters reach such a sink, so that the notebook-order pass can
treat the literals passed at each call site as code (their names become inputs) and warn where
a non-literal is passed.

The flow is deliberately small: a value is *the parameter itself* (or an element of it:
``for n in names``, ``names[0]``, ``self.names = names``) or *built from it* (``name + "_x"``,
``f"df.{col}"``). Only the first lets a call-site literal stand for the evaluated code; the
second is reported as code this tool cannot see.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BIND",
    "BUILT",
    "CODE",
    "EXEC",
    "CodeUse",
    "class_code_use",
    "function_code_use",
    "own_namespace",
    "param_names",
    "passed_values",
]

CODE = "code"  # the argument is evaluated as code: the names it reads are read
BIND = "bind"  # the argument names a global the function assigns (``globals()[name] = …``)
BUILT = "built"  # code is built from the argument: which names it reads cannot be known
EXEC = "exec"  # the code runs in the notebook's globals (``exec(code, globals())``): it binds

# Parameter → True when the value is that parameter unchanged (or an element of it).
_Flow = dict[str, bool]
# Calls that hand back their argument's elements unchanged.
_SAME_ELEMENTS = frozenset({"list", "tuple", "set", "sorted", "reversed", "iter", "frozenset"})
# ``globals().get(name)`` and friends: what the first argument does to the name.
_GLOBALS_METHODS = {
    "get": (CODE,),
    "__getitem__": (CODE,),
    "pop": (CODE,),
    "__setitem__": (BIND,),
    "setdefault": (CODE, BIND),
}


@dataclass
class CodeUse:
    """What a function (or a class, through its constructor's parameters) evaluates.

    Attributes:
        params: Parameter name → roles (:data:`CODE`, :data:`BIND`, :data:`BUILT`).
        dynamic: ``eval``, ``exec`` or ``globals`` when the body evaluates code that comes from
            none of the parameters (a global string, ``globals().items()``…): unknowable.
    """

    params: dict[str, set[str]] = field(default_factory=dict)
    dynamic: str | None = None


def _is_globals(node: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "globals"
        and not node.args
    )


def own_namespace(call: ast.Call) -> bool:
    """An ``eval``/``exec`` given a namespace of its own (``eval(code, env)``): its code reads
    that namespace, not the notebook's globals."""
    given = call.args[1] if len(call.args) > 1 else None
    for k in call.keywords:
        if k.arg == "globals":
            given = k.value
    return given is not None and not _is_globals(given)


def _merge(a: _Flow, b: _Flow) -> _Flow:
    """Both flows at once: a parameter stays unchanged only if unchanged along both."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out[k] and v if k in out else v
    return out


def _built(flow: _Flow) -> _Flow:
    return dict.fromkeys(flow, False)


def param_names(args: ast.arguments) -> list[str]:
    """Every parameter a signature binds, in order: positional, ``*args``, keyword-only,
    ``**kwargs``."""
    names = [a.arg for a in args.posonlyargs + args.args]
    if args.vararg:
        names.append(args.vararg.arg)
    names += [a.arg for a in args.kwonlyargs]
    if args.kwarg:
        names.append(args.kwarg.arg)
    return names


class _Tracker:
    """Where parameter values flow inside one function body (nested scopes included).

    Nested scopes are walked as if they were one namespace: a closure reading an outer
    parameter is tracked; a nested function's own same-named parameter is over-approximated.
    """

    def __init__(self, roots: dict[str, _Flow], attrs: dict[str, _Flow], self_name: str | None):
        self.names = {k: dict(v) for k, v in roots.items()}
        self.attrs = attrs  # shared across a class's methods: ``self.X`` of the instance
        self.self_name = self_name

    def flow(self, e: ast.AST | None) -> _Flow:
        """Which parameters an expression's value comes from, and whether unchanged."""
        if e is None:
            return {}
        if isinstance(e, ast.Name):
            return dict(self.names.get(e.id, {}))
        if isinstance(e, ast.Attribute):
            if self.self_name and isinstance(e.value, ast.Name) and e.value.id == self.self_name:
                return dict(self.attrs.get(e.attr, {}))
            return _built(self.flow(e.value))
        if isinstance(e, ast.Subscript | ast.Starred):
            return self.flow(e.value)
        if isinstance(e, ast.Tuple | ast.List | ast.Set):
            out: _Flow = {}
            for elt in e.elts:
                out = _merge(out, self.flow(elt))
            return out
        if isinstance(e, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            return self.flow(e.elt)
        if isinstance(e, ast.IfExp):
            return _merge(self.flow(e.body), self.flow(e.orelse))
        if (
            isinstance(e, ast.Call)
            and isinstance(e.func, ast.Name)
            and e.func.id in _SAME_ELEMENTS
            and len(e.args) == 1
            and not e.keywords
        ):
            return self.flow(e.args[0])
        out = {}
        for child in ast.iter_child_nodes(e):
            if isinstance(child, ast.expr):
                out = _merge(out, self.flow(child))
            elif isinstance(child, ast.keyword):
                out = _merge(out, self.flow(child.value))
            elif isinstance(child, ast.comprehension):
                out = _merge(out, self.flow(child.iter))
        return _built(out)

    def _add(self, table: dict[str, _Flow], key: str, flow: _Flow) -> bool:
        if not flow:
            return False
        old = table.get(key)
        new = _merge(old, flow) if old is not None else dict(flow)
        if new == old:
            return False
        table[key] = new
        return True

    def assign(self, target: ast.AST, flow: _Flow) -> bool:
        """``target = <value with this flow>``; True if anything changed."""
        if isinstance(target, ast.Name):
            return self._add(self.names, target.id, flow)
        if isinstance(target, ast.Attribute):
            if (
                self.self_name
                and isinstance(target.value, ast.Name)
                and target.value.id == self.self_name
            ):
                return self._add(self.attrs, target.attr, flow)
            return False
        if isinstance(target, ast.Tuple | ast.List):
            changed = False
            for elt in target.elts:
                changed |= self.assign(elt, flow)
            return changed
        if isinstance(target, ast.Starred):
            return self.assign(target.value, flow)
        if isinstance(target, ast.Subscript):  # `names[k] = v`: the container now holds v
            return self.assign(target.value, flow)
        return False

    def settle(self, body: list[ast.stmt]) -> bool:
        """Propagate flows through the body's bindings until nothing changes."""
        nodes = [n for stmt in body for n in ast.walk(stmt)]
        any_change = False
        changed = True
        while changed:
            changed = False
            for n in nodes:
                if isinstance(n, ast.Assign):
                    flow = self.flow(n.value)
                    for t in n.targets:
                        changed |= self.assign(t, flow)
                elif isinstance(n, ast.AnnAssign) and n.value is not None:
                    changed |= self.assign(n.target, self.flow(n.value))
                elif isinstance(n, ast.AugAssign):
                    flow = _built(_merge(self.flow(n.value), self.flow(n.target)))
                    changed |= self.assign(n.target, flow)
                elif isinstance(n, ast.For | ast.AsyncFor | ast.comprehension):
                    changed |= self.assign(n.target, self.flow(n.iter))
                elif isinstance(n, ast.NamedExpr):
                    changed |= self.assign(n.target, self.flow(n.value))
                elif isinstance(n, ast.withitem) and n.optional_vars is not None:
                    changed |= self.assign(n.optional_vars, _built(self.flow(n.context_expr)))
            any_change |= changed
        return any_change

    def sinks(self, body: list[ast.stmt], use: CodeUse) -> None:
        """Record the parameters that reach ``eval``/``exec``/``globals()`` in ``use``."""
        parents: dict[ast.AST, ast.AST] = {}
        for stmt in body:
            for node in ast.walk(stmt):
                for child in ast.iter_child_nodes(node):
                    parents[child] = node

        def reach(flow: _Flow, roles: tuple[str, ...], what: str) -> None:
            if not flow:
                use.dynamic = use.dynamic or what
            for p, unchanged in flow.items():
                use.params.setdefault(p, set()).update(roles if unchanged else (BUILT,))

        for stmt in body:
            for node in ast.walk(stmt):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                    continue
                fn = node.func.id
                if fn in ("eval", "exec") and node.args:
                    code = node.args[0]
                    if isinstance(code, ast.Constant) and isinstance(code.value, str):
                        continue  # a literal: its names are plain reads of the body
                    if own_namespace(node):
                        continue  # `eval(expr, env)`: reads env, not the notebook
                    # exec(code, globals()): what the code assigns is a notebook global
                    given = len(node.args) > 1 or any(k.arg == "globals" for k in node.keywords)
                    in_globals = fn == "exec" and given
                    reach(self.flow(code), (CODE, EXEC) if in_globals else (CODE,), fn)
                elif fn == "globals" and not node.args:
                    parent = parents.get(node)
                    grand = parents.get(parent) if parent is not None else None
                    if isinstance(parent, ast.Subscript) and parent.value is node:
                        if isinstance(parent.ctx, ast.Load):
                            roles: tuple[str, ...] = (CODE,)
                        elif isinstance(parent.ctx, ast.Store):
                            augmented = isinstance(grand, ast.AugAssign)
                            roles = (CODE, BIND) if augmented else (BIND,)
                        else:  # `del globals()[name]`
                            use.dynamic = use.dynamic or "globals"
                            continue
                        reach(self.flow(parent.slice), roles, "globals")
                    elif (
                        isinstance(parent, ast.Attribute)
                        and parent.attr in _GLOBALS_METHODS
                        and isinstance(grand, ast.Call)
                        and grand.func is parent
                        and grand.args
                    ):
                        reach(self.flow(grand.args[0]), _GLOBALS_METHODS[parent.attr], "globals")
                    elif (
                        isinstance(parent, ast.Call)
                        and isinstance(parent.func, ast.Name)
                        and parent.func.id in ("eval", "exec")
                        and node is not parent.args[0]
                    ):
                        continue  # `eval(code, globals())`: the code is what counts
                    else:  # `globals().items()`, `globals().update(…)`, passed along…
                        use.dynamic = use.dynamic or "globals"


def _evaluates(nodes: list[ast.stmt]) -> bool:
    """Whether the code mentions eval, exec or globals at all (most functions do not)."""
    return any(
        isinstance(n, ast.Name) and n.id in ("eval", "exec", "globals")
        for stmt in nodes
        for n in ast.walk(stmt)
    )


def function_code_use(args: ast.arguments | None, body: list[ast.stmt]) -> CodeUse:
    """Which parameters of a function (or lambda) its body evaluates as code."""
    use = CodeUse()
    if not _evaluates(body):
        return use
    roots = {p: {p: True} for p in param_names(args)} if args is not None else {}
    tracker = _Tracker(roots, {}, None)
    tracker.settle(body)
    tracker.sinks(body, use)
    return use


def class_code_use(node: ast.ClassDef) -> CodeUse:
    """Which constructor parameters a class's methods evaluate as code.

    ``__init__`` stores its parameters on ``self``; any method may evaluate them later (a
    ``__repr__`` runs when the instance is displayed). A method's own parameters are roots
    too, so evaluating them is not mistaken for unknowable code; they count at calls of that
    method (see the per-method summaries), not at construction.
    """
    if not _evaluates(node.body):
        return CodeUse()
    methods = [
        s
        for s in node.body
        if isinstance(s, ast.FunctionDef | ast.AsyncFunctionDef)
        and not any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in s.decorator_list)
    ]
    attrs: dict[str, _Flow] = {}
    trackers: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, _Tracker]] = []
    for m in methods:
        params = param_names(m.args)
        self_name = params[0] if params else None
        own = "" if m.name == "__init__" else "."  # a method's own parameters: not the class's
        roots = {p: {own + p: True} for p in params[1:]}
        trackers.append((m, _Tracker(roots, attrs, self_name)))
    for _ in range(len(trackers) + 1):  # attributes set in one method flow into the others
        if not any([t.settle(m.body) for m, t in trackers]):
            break
    use = CodeUse()
    for m, t in trackers:
        t.sinks(m.body, use)
    use.params = {p: roles for p, roles in use.params.items() if not p.startswith(".")}
    return use


def passed_values(call: Any, summary: Any, param: str, skip: int = 0) -> list[str | None]:
    """What a call passes for ``param``: each value's string literal, or None if not one.

    Args:
        call: The call (:class:`~jupyter_pipeline.analysis.facts.CallInfo`).
        summary: The callee's :class:`~jupyter_pipeline.analysis.facts.FuncSummary`.
        param: A parameter name of the callee.
        skip: Leading positional parameters the call does not pass (``self`` of a method).
    """
    positional = summary.param_names[skip:]
    if param in positional:
        i = positional.index(param)
        if i < len(call.args):
            return [call.strings[i]]
        return [call.kwstrings.get(param)] if param in call.kwargs else []
    if param == summary.vararg:
        return list(call.strings[len(positional) :])
    if param == summary.kwarg:
        named = set(positional) | set(summary.kwonly)
        return [call.kwstrings.get(k) for k in call.kwargs if k not in named]
    return [call.kwstrings.get(param)] if param in call.kwargs else []
