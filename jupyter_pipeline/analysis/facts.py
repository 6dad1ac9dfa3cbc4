"""What the per-cell scope analysis produces: a cell's ordered events on global names.

:mod:`jupyter_pipeline.analysis.cells` turns a cell into these; the notebook-order pass
(:mod:`jupyter_pipeline.analysis.pipeline`) reads them. They are pure data: memoized per
cell source (:mod:`jupyter_pipeline.analysis.memo`) and never changed once made.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CallInfo", "CellFacts", "Cond", "DefInfo", "Event", "FuncSummary"]

# Condition contexts: a conditional block gets a fresh id; a context is the tuple of ids of
# the blocks around a statement, () at the top level. A name bound in context B is surely
# bound for code in context R when B is a prefix of R.
Cond = tuple[int, ...]


@dataclass(slots=True)
class CallInfo:
    """A call, as written: the pass resolves what its callee is.

    Attributes:
        path: Dotted callee (``("np", "random", "seed")``), empty when not a dotted name.
        args: Root variable of each positional argument (None when not rooted in a name).
        kwargs: Root variable of each keyword argument.
        strings: String literals among the positional arguments (None elsewhere).
        kwstrings: String-literal keyword arguments.
        inplace: ``inplace=True`` was passed.
        statement: The call is a whole top-level statement (replayable as state).
        source: That statement's source, when ``statement``.
        method: The attribute called when the callee is ``<expression>.method`` (set also
            when ``path`` is empty: ``pd.DataFrame(d).to_csv(…)``, ``plt.gcf().savefig(…)``).
        receiver: When the receiver is itself a call with a string literal first argument
            (``Path('x.txt').write_text(…)``): that call's dotted callee and the string.
    """

    path: tuple[str, ...]
    args: list[str | None] = field(default_factory=list)
    kwargs: dict[str, str | None] = field(default_factory=dict)
    strings: list[str | None] = field(default_factory=list)
    kwstrings: dict[str, str] = field(default_factory=dict)
    inplace: bool = False
    statement: bool = False
    source: str = ""
    method: str | None = None
    receiver: tuple[tuple[str, ...], str] | None = None


@dataclass(slots=True)
class FuncSummary:
    """What calling a function (or instantiating a class) does to global names.

    ``param_names`` are the positional parameters (a class: its ``__init__``'s, without
    ``self``), ``vararg``/``kwonly``/``kwarg`` the rest of the signature. ``code_params`` maps
    the parameters the body evaluates as code to their roles (see
    :mod:`jupyter_pipeline.analysis.dyncode`); ``dynamic`` names the ``eval``/``exec``/
    ``globals`` it runs on code from elsewhere. ``methods`` holds a class's methods' own
    summaries, for calls through an instance.
    """

    reads: set[str] = field(default_factory=set)
    writes: set[str] = field(default_factory=set)
    mutates: set[str] = field(default_factory=set)
    mutated_params: set[int | str] = field(default_factory=set)
    calls: list[CallInfo] = field(default_factory=list)
    param_names: list[str] = field(default_factory=list)
    vararg: str | None = None
    kwonly: list[str] = field(default_factory=list)
    kwarg: str | None = None
    code_params: dict[str, set[str]] = field(default_factory=dict)
    dynamic: str | None = None
    methods: dict[str, FuncSummary] = field(default_factory=dict)


@dataclass(slots=True)
class DefInfo:
    """A binding made by ``import``, ``def`` or ``class``: replayed, not pickled.

    Attributes:
        source: The statement's source (decorators included).
        reads: Names the statement reads when it runs (decorators, defaults, bases, class body).
        summary: For functions and classes, what calling them does.
        origin: For imports, the dotted name bound (``numpy`` for ``import numpy as np``).
        statement_id: Identifies the statement (several names may share it).
    """

    source: str
    reads: list[str] = field(default_factory=list)
    summary: FuncSummary | None = None
    origin: str | None = None
    statement_id: int = 0


@dataclass(slots=True)
class Event:
    """One thing a cell does to a global name, in evaluation order.

    ``op`` is one of: ``read``, ``bind``, ``del``, ``mutate``, ``call``, ``magic``, ``string``
    (name used inside a string), ``dynamic`` (eval/exec/globals() we cannot see into),
    ``star`` (star import), ``file`` (literal path read or written).
    """

    op: str
    name: str
    line: int
    cond: Cond = ()
    kind: str = "data"
    info: Any = None


@dataclass
class CellFacts:
    """The events of one cell plus whether it can be seen into at all."""

    events: list[Event]
    opaque_magic: str | None = None
    cell_magic: str | None = None
    cell_magic_args: str = ""
