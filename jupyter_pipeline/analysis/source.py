"""Notebook cell source → Python AST, through IPython's own input transformer.

Magics, ``!cmd``, ``x = !cmd``, ``x?`` and cell magics are valid notebook code: IPython turns
them into plain Python (``get_ipython().run_line_magic(...)``) and so do we, so a magic is never
a syntax error. Magics whose argument is itself Python (``%time y = f(x)``, ``%%capture out``)
are unwrapped so the names inside them are seen.
"""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache

from jupyter_pipeline.analysis.knowledge import CODE_CELL_MAGICS

__all__ = ["CellSyntaxError", "ParsedCell", "parse_cell"]

# Sources IPython's cleanup transforms leave alone: no leading blank line, no `>>>`, `...` or
# `In [n]:` prompt on the first line.
_PLAIN_START = re.compile(r"(?!\s*\n)(?![ \t]*(?:>>>|\.\.\.|In \[\d*\]:))")
_FLAGS = ast.PyCF_ONLY_AST | getattr(ast, "PyCF_ALLOW_TOP_LEVEL_AWAIT", 0)


class CellSyntaxError(Exception):
    """A cell that is not valid Python even after IPython's transformation."""

    def __init__(self, line: int | None, message: str):
        self.line = line
        self.message = message
        super().__init__(message)


@dataclass
class ParsedCell:
    """A cell as Python.

    Attributes:
        tree: The module AST of the transformed code.
        code: The transformed Python source the AST refers to.
        line_offset: Add to an AST line number to get the line in the original cell.
        cell_magic: Name of the cell magic, if the cell starts with one.
        cell_magic_args: Its argument line.
        opaque: True when the cell body is not Python (``%%bash``, ``%%html``…).
    """

    tree: ast.Module
    code: str
    line_offset: int = 0
    cell_magic: str | None = None
    cell_magic_args: str = ""
    opaque: bool = False


@lru_cache(maxsize=1)
def _transformer():  # IPython import is the slowest part of a cold start: do it once, lazily.
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager()


def _transform(source: str) -> str:
    if not any(ch in source for ch in "%!?"):
        return source  # nothing for IPython to do; skip its (slow) machinery
    return _transformer().transform_cell(source)


def to_python(source: str) -> str:
    """A cell's IPython source (magics, ``!cmd``) as plain Python; "" if IPython cannot read it."""
    try:
        return _transform(source)
    except Exception:  # IPython raises various errors on malformed magics
        return ""


def _compile(code: str) -> ast.Module:
    try:
        # The user's code may warn when compiled (`"\."`); that is theirs to see when it runs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return compile(code, "<cell>", "exec", flags=_FLAGS, dont_inherit=True)  # type: ignore[no-any-return]
    except SyntaxError as exc:
        raise CellSyntaxError(exc.lineno, exc.msg) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        raise CellSyntaxError(None, str(exc)) from None


def parse_cell(source: str) -> ParsedCell:
    """Turn one code cell's source into a Python AST.

    Raises:
        CellSyntaxError: The cell is not valid notebook code.
    """
    stripped = source.lstrip("\n")
    lead = len(source) - len(stripped)
    lead_lines = source[:lead].count("\n")
    if stripped.startswith("%%"):
        first, _, body = stripped.partition("\n")
        name, _, args = first[2:].partition(" ")
        name = name.strip()
        if name in CODE_CELL_MAGICS:
            inner = parse_cell(body)
            inner.line_offset += 1 + lead_lines
            inner.cell_magic = name
            inner.cell_magic_args = args.strip()
            return inner
        # Not Python inside (%%bash, %%html, %%writefile…): analyze nothing in the body.
        return ParsedCell(
            tree=ast.Module(body=[], type_ignores=[]),
            code="",
            line_offset=lead_lines,
            cell_magic=name,
            cell_magic_args=args.strip(),
            opaque=True,
        )
    if _PLAIN_START.match(source):
        # `%`, `!` and `?` are common in plain Python (`"%d" % n`, `a != b`, strings);
        # IPython's transformer only rewrites code that is not valid Python (magics,
        # `!cmd`, `x?`) plus leading blank lines and prompts, which this match excludes.
        # So valid Python is used as is, skipping the transformer (the slowest part).
        try:
            return ParsedCell(tree=_compile(source), code=source)
        except CellSyntaxError:
            pass
    try:
        code = _transform(source)
    except Exception as exc:  # IPython raises various errors on malformed magics
        raise CellSyntaxError(None, f"IPython cannot read this cell ({exc})") from None
    try:
        return ParsedCell(tree=_compile(code), code=code)
    except CellSyntaxError:
        if code is not source:
            raise
    # Plain-looking code that does not compile: IPython may still accept it (an indented
    # cell is dedented, for one), so give its transformer the last word.
    code = _transformer().transform_cell(source)
    return ParsedCell(tree=_compile(code), code=code)


def parse_code_string(code: str) -> ast.Module | None:
    """Parse Python code found in a string (``%time`` arguments, ``eval``); None if invalid."""
    try:
        return _compile(_transform(code))
    except CellSyntaxError:
        return None
