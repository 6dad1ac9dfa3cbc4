"""Compare two executed versions of one notebook cell by cell (``jupyter-pipeline verify``).

The straight papermill run and the pipeline's merged notebook must show the same text
outputs in every code cell. Cells papermill adds (``injected-parameters``) are left out so
positions line up; memory addresses (``at 0x7f…``) are masked, since they differ between
any two runs.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nbformat import NotebookNode

    from jupyter_pipeline.model import Parameter

__all__ = [
    "IMAGE_MIMES",
    "CellDiff",
    "compare_notebooks",
    "image_fingerprints",
    "inject_parameters",
    "text_outputs",
]

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
# Image types a cell output can carry, in the order they are fingerprinted.
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml")


@dataclass
class CellDiff:
    """One code cell whose outputs differ.

    Attributes:
        cell: Index of the cell in the source notebook (markdown included).
        expected: Text outputs of the straight run.
        actual: Text outputs of the pipeline run.
    """

    cell: int
    expected: list[str]
    actual: list[str]

    def diff(self, limit: int = 20) -> str:
        """A unified diff of the two, at most ``limit`` lines."""
        lines = list(
            difflib.unified_diff(
                "\n".join(self.expected).splitlines(),
                "\n".join(self.actual).splitlines(),
                "straight run",
                "pipeline",
                lineterm="",
            )
        )
        if len(lines) > limit:
            lines = [*lines[:limit], f"... ({len(lines) - limit} more lines)"]
        return "\n".join(lines)


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def image_fingerprints(data: Mapping[str, Any]) -> list[str]:
    """One line per image in an output's ``data``: ``[MIME] <sha256 prefix>``.

    Equal lines mean equal image payloads (a list of lines and the joined string are the
    same image); the line is short enough for a diff.
    """
    return [
        f"[{mime}] {hashlib.sha256(_text(data[mime]).encode()).hexdigest()[:16]}"
        for mime in IMAGE_MIMES
        if mime in data
    ]


def text_outputs(cell: dict[str, Any], *, stderr: bool = False, images: bool = False) -> list[str]:
    """The comparable outputs of one cell, one string per kind, in order.

    Consecutive stream outputs are joined (how a kernel chunks a stream is not output).

    Args:
        cell: An executed code cell.
        stderr: Include stderr (warnings shown once per process differ between one kernel
            and one kernel per step, so it is off by default).
        images: Include a fingerprint of each image (:func:`image_fingerprints`).
    """
    out: list[str] = []
    stream: dict[str, str] = {}
    order: list[str] = []

    def flush() -> None:
        for name in order:
            out.append(f"[{name}] " + _ADDRESS.sub("0x…", stream[name]))
        stream.clear()
        order.clear()

    for o in cell.get("outputs", []):
        kind = o.get("output_type")
        if kind == "stream":
            name = o.get("name", "stdout")
            if name == "stderr" and not stderr:
                continue
            if name not in stream:
                order.append(name)
                stream[name] = ""
            stream[name] += _text(o.get("text", ""))
            continue
        flush()
        if kind in ("execute_result", "display_data"):
            data = o.get("data", {})
            if "text/plain" in data:
                out.append("[result] " + _ADDRESS.sub("0x…", _text(data["text/plain"])))
            if images:
                out += image_fingerprints(data)
        elif kind == "error":
            out.append(f"[error] {o.get('ename')}: {o.get('evalue')}")
    flush()
    return out


def inject_parameters(
    nb: NotebookNode,
    parameters: list[Parameter],
    overrides: dict[str, Any],
    *,
    kernel_name: str,
    language: str,
) -> NotebookNode:
    """A copy of ``nb`` whose straight run sees ``overrides`` where the pipeline does.

    papermill injects only after a cell tagged ``parameters``; a parameter of a Kale
    ``pipeline-parameters`` cell would keep its default in papermill's run while the
    pipeline uses the override, and every cell using it would "differ". So the overrides
    are injected here, for papermill to run the notebook with no parameters of its own:
    an ``injected-parameters`` cell (papermill's tag and code, via its translators) right
    after the cell that defines each overridden parameter.

    Args:
        nb: The source notebook (not modified).
        parameters: The pipeline's parameters (name, defining cell).
        overrides: The values to inject, by name.
        kernel_name: The notebook's kernel (papermill picks the translator by it).
        language: The notebook's language.
    """
    import copy

    import nbformat
    from papermill.translators import translate_parameters

    out = copy.deepcopy(nb)
    by_cell: dict[int, dict[str, Any]] = {}
    cell_of = {p.name: p.cell for p in parameters}
    for name, value in overrides.items():
        if name in cell_of:
            by_cell.setdefault(cell_of[name], {})[name] = value
    for cell in sorted(by_cell, reverse=True):  # from the end: earlier indices stay valid
        injected = nbformat.v4.new_code_cell(
            translate_parameters(kernel_name, language, by_cell[cell], "Injected parameters")
        )
        injected.metadata["tags"] = ["injected-parameters"]
        out.cells.insert(cell + 1, injected)
    if overrides:
        out.metadata.setdefault("papermill", {})["parameters"] = dict(overrides)
    return out


def _code_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        c
        for c in nb.get("cells", [])
        if c.get("cell_type") == "code"
        and "injected-parameters" not in (c.get("metadata", {}).get("tags") or [])
    ]


def compare_notebooks(
    expected: dict[str, Any],
    actual: dict[str, Any],
    source: dict[str, Any] | None = None,
    *,
    stderr: bool = False,
    images: bool = False,
    skip: Collection[int] = (),
) -> list[CellDiff]:
    """Code cells whose comparable outputs differ between two runs of the same notebook.

    Args:
        expected: The straight run's executed notebook.
        actual: The pipeline's merged notebook.
        source: The source notebook, to report source cell indices (default: ``expected``).
        stderr: Also compare stderr.
        images: Also compare image fingerprints.
        skip: Source cell indices left out of the comparison: skip-tagged cells, which the
            pipeline does not run (a straight run does).
    """
    src_cells = (source or expected).get("cells", [])
    code_index = [
        i
        for i, c in enumerate(src_cells)
        if c.get("cell_type") == "code"
        and "injected-parameters" not in (c.get("metadata", {}).get("tags") or [])
    ]
    diffs = []
    a_cells, b_cells = _code_cells(expected), _code_cells(actual)
    for k in range(max(len(a_cells), len(b_cells))):
        a = text_outputs(a_cells[k], stderr=stderr, images=images) if k < len(a_cells) else []
        b = text_outputs(b_cells[k], stderr=stderr, images=images) if k < len(b_cells) else []
        cell = code_index[k] if k < len(code_index) else k
        if a != b and cell not in skip:
            diffs.append(CellDiff(cell=cell, expected=a, actual=b))
    return diffs
