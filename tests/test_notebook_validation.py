"""validate_notebook: nbformat.validate's verdicts, errors and repairs, re-checking only cells
not seen valid before (the server validates the editor's whole notebook on every edit)."""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable
from typing import Any

import nbformat
import pytest
from nbformat import ValidationError
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_raw_cell

from jupyter_pipeline.notebook import validation
from jupyter_pipeline.notebook.validation import validate_notebook
from jupyter_pipeline.runners.launch import LaunchError, notebook_from_json


def _data() -> dict[str, Any]:
    book = new_notebook(
        cells=[new_code_cell("x = 1"), new_markdown_cell("# a"), new_raw_cell("r")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    )
    return json.loads(nbformat.writes(book))


BREAK: dict[str, Callable[[dict[str, Any]], None]] = {
    "code cell without outputs": lambda d: d["cells"][0].pop("outputs"),
    "markdown cell with outputs": lambda d: d["cells"][1].__setitem__("outputs", []),
    "id with a space": lambda d: d["cells"][2].__setitem__("id", "a b"),
    "unknown cell key": lambda d: d["cells"][0].__setitem__("foo", 1),
    "unknown cell type": lambda d: d["cells"][1].__setitem__("cell_type", "nope"),
    "tags not a list": lambda d: d["cells"][0]["metadata"].__setitem__("tags", "x"),
    "stream output without text": lambda d: d["cells"][0].__setitem__(
        "outputs", [{"output_type": "stream", "name": "stdout"}]
    ),
    "kernelspec without name": lambda d: d["metadata"]["kernelspec"].pop("name"),
    "cells not a list": lambda d: d.__setitem__("cells", {}),
}


def _nbformat_error(data: dict[str, Any]) -> str | None:
    try:
        nbformat.validate(nbformat.from_dict(copy.deepcopy(data)))
    except ValidationError as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("broken", list(BREAK))
def test_an_invalid_notebook_gets_nbformats_error(broken: str, warm: bool) -> None:
    validation._VALID_CELLS.clear()
    if warm:  # the valid version was validated first: its cells are remembered
        validate_notebook(nbformat.from_dict(_data()))
        assert validation._VALID_CELLS
    data = _data()
    BREAK[broken](data)
    expected = _nbformat_error(data)
    assert expected is not None
    with pytest.raises(ValidationError) as info:
        validate_notebook(nbformat.from_dict(data))
    assert str(info.value) == expected
    with pytest.raises(LaunchError, match="not a valid notebook"):
        notebook_from_json(data, "n.ipynb")


def test_a_valid_notebook_is_checked_cell_by_cell_once() -> None:
    validation._VALID_CELLS.clear()
    data = _data()
    validate_notebook(nbformat.from_dict(data))
    assert len(validation._VALID_CELLS) == 3
    data["cells"][0]["source"] = "x = 2"  # an edit: one more cell checked, the rest remembered
    validate_notebook(nbformat.from_dict(data))
    assert len(validation._VALID_CELLS) == 4


@pytest.mark.parametrize("case", ["repeated id", "missing id"])
def test_ids_nbformat_repairs_are_repaired_as_nbformat_does(case: str) -> None:
    data = _data()
    if case == "repeated id":
        data["cells"][2]["id"] = data["cells"][0]["id"]
    else:
        del data["cells"][1]["id"]
    ours, theirs = nbformat.from_dict(copy.deepcopy(data)), nbformat.from_dict(data)
    with warnings.catch_warnings(record=True) as ours_warned:
        warnings.simplefilter("always")
        validate_notebook(ours)
    with warnings.catch_warnings(record=True) as theirs_warned:
        warnings.simplefilter("always")
        nbformat.validate(theirs)
    assert [type(w.message) for w in ours_warned] == [type(w.message) for w in theirs_warned]
    assert ours_warned
    ids = [c.get("id") for c in ours.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    assert [c.source for c in ours.cells] == [c.source for c in theirs.cells]
