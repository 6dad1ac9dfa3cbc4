"""Per-cell memo of the analysis: a cell's AST and scope events, keyed by its source.

Parsing a cell (IPython's transformer, ``compile``) and turning its top level into events
(:func:`~jupyter_pipeline.analysis.cells.analyze_cell`) are pure functions of the cell's
source and are most of what analyzing a notebook costs. The notebook-order pass that follows
is cheap. So when the editor sends a notebook with one cell edited, only that cell is parsed
and scoped again; the other cells' facts come from here.

What makes reuse give exactly the cold result:

- Nothing downstream changes the memoized objects (the pass builds its own bindings).
- Identities stay unique within one analysis. Statement ids (which definition statement a
  binding comes from) and condition-context ids (which ``if``/loop block an event is in) are
  only compared for equality, and come from process-wide counters, so facts made at
  different times never share one. Two cells with the same source in one notebook would
  share them, so the analysis takes the memoized facts for the first such cell only and
  scopes the others afresh (:func:`fresh_facts`).
- Tags, roles and a cell's position are not part of a cell's facts: they are applied by the
  notebook-order pass, which always runs whole.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from itertools import count

from jupyter_pipeline.analysis.cells import analyze_cell
from jupyter_pipeline.analysis.facts import CellFacts
from jupyter_pipeline.analysis.source import CellSyntaxError, ParsedCell, parse_cell

__all__ = ["MEMO_SIZE", "analyzed_cell", "clear_memo", "fresh_facts", "memo_info"]

# Cells kept (least recently used dropped first): a few notebooks of a few hundred cells.
# An entry holds the cell's AST and events: ~11 kB for the cells of bench/analyze.py's
# generated notebook, so ~25 MB when full.
MEMO_SIZE = 2048

_statement_ids = count(1)
_memo: OrderedDict[str, tuple[ParsedCell, CellFacts] | CellSyntaxError] = OrderedDict()
_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0}


def _next_statement_id() -> int:
    return next(_statement_ids)


def analyzed_cell(source: str) -> tuple[ParsedCell, CellFacts]:
    """A code cell parsed and scoped (memoized by source; shared: do not modify the result).

    Raises:
        CellSyntaxError: The cell is not valid notebook code (also memoized).
    """
    with _lock:
        found = _memo.get(source)
        if found is not None:
            _memo.move_to_end(source)
            _stats["hits"] += 1
    if found is None:
        try:
            parsed = parse_cell(source)
            found = (parsed, analyze_cell(parsed, _next_statement_id))
        except CellSyntaxError as exc:
            found = exc
        with _lock:
            _stats["misses"] += 1
            _memo[source] = found
            while len(_memo) > MEMO_SIZE:
                _memo.popitem(last=False)
    if isinstance(found, CellSyntaxError):
        raise CellSyntaxError(found.line, found.message)
    return found


def fresh_facts(parsed: ParsedCell) -> CellFacts:
    """``parsed`` scoped again, with new statement and condition ids (not memoized).

    For a cell whose source already occurs earlier in the same notebook: its events must
    not share identities with that cell's.
    """
    return analyze_cell(parsed, _next_statement_id)


def clear_memo() -> None:
    """Forget every memoized cell (tests compare warm analyses with cold ones)."""
    with _lock:
        _memo.clear()
        _stats.update(hits=0, misses=0)


def memo_info() -> dict[str, int]:
    """Hits, misses and current size of the memo (for benchmarks and tests)."""
    with _lock:
        return {**_stats, "size": len(_memo)}
