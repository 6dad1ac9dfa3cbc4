"""``nbformat.validate`` for a notebook an editor sends again and again, re-checking only the
cells that changed.

The sidebar sends the whole unsaved notebook on every edit; validating its 200 cells
against nbformat's schema was about a fifth of what ``POST analyze`` cost once the analysis
itself became incremental. The v4 schema checks each cell on its own (``cells`` is an array
of ``#/definitions/cell``), so a notebook is valid when its cell-less rest is and each cell
is; a cell (by its JSON) that passed once passes again. Anything unusual — a cell nbformat
would repair (missing or repeated ``id``), a check that fails — goes to ``nbformat.validate``
on the whole notebook, so errors, warnings and repairs are exactly nbformat's.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import nbformat
from nbformat import ValidationError

__all__ = ["validate_notebook"]

# (nbformat_minor, a cell's JSON) of cells found valid: a few editors' notebooks.
_VALID_CELLS: OrderedDict[tuple[int, str], None] = OrderedDict()
_MAX_CELLS = 4096
_lock = threading.Lock()


def validate_notebook(nb: Any) -> None:
    """Validate a v4 notebook as ``nbformat.validate(nb)`` does (same errors and repairs).

    Raises:
        nbformat.ValidationError: As ``nbformat.validate``.
    """
    if not _valid_by_cells(nb):
        nbformat.validate(nb)


def _valid_by_cells(nb: Any) -> bool:
    """True when the notebook is surely valid and nbformat would change nothing in it;
    False means "ask nbformat" (it may still be valid)."""
    minor = nb.get("nbformat_minor")
    cells = nb.get("cells")
    if nb.get("nbformat") != 4 or not isinstance(minor, int) or not isinstance(cells, list):
        return False
    if not all(isinstance(c, dict) for c in cells):
        return False
    if minor >= 5:
        # nbformat adds missing ids and renumbers repeated ones (with a warning): let it.
        ids = [c.get("id") for c in cells]
        if not all(isinstance(i, str) for i in ids) or len(set(ids)) != len(ids):
            return False
    try:
        nbformat.validate({**nb, "cells": []})  # everything but the cells
    except ValidationError:
        return False
    fresh = []
    for cell in cells:
        key = (minor, json.dumps(cell, sort_keys=True))
        with _lock:
            seen = key in _VALID_CELLS
            if seen:
                _VALID_CELLS.move_to_end(key)
        if seen:
            continue
        try:
            nbformat.validate(cell, ref="cell", version=4, version_minor=minor)
        except ValidationError:
            return False
        fresh.append(key)
    with _lock:
        for key in fresh:
            _VALID_CELLS[key] = None
        while len(_VALID_CELLS) > _MAX_CELLS:
            _VALID_CELLS.popitem(last=False)
    return True
