"""Generating a step notebook from the source notebook, and merging executed steps back."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import nbformat
from nbformat import NotebookNode

from jupyter_pipeline.model import DefinitionKind, Pipeline
from jupyter_pipeline.runtime.kernel import state_key

__all__ = [
    "DEFINITIONS_TAG",
    "DERIVED_TAG",
    "LOAD_TAG",
    "PARAMETERS_TAG",
    "SAVE_TAG",
    "build_step_notebook",
    "merge_outputs",
    "render_load",
    "render_save",
]

PARAMETERS_TAG = "parameters"
DEFINITIONS_TAG = "jupyter-pipeline-definitions"
LOAD_TAG = "jupyter-pipeline-load"
DERIVED_TAG = "jupyter-pipeline-derived"
SAVE_TAG = "jupyter-pipeline-save"
META_KEY = "jupyter_pipeline"
_KERNEL_MODULE = "jupyter_pipeline.runtime.kernel"
# Tags of user cells that must not run again inside a step (the generated parameters cell
# already defines their names, and re-running them would undo papermill's injection).
_PARAMETER_TAGS = {"parameters", "injected-parameters", "pipeline-parameters"}
_SKIP_TAG = "skip-execution"  # nbclient's default skip_cells_with_tag


def render_load(inputs: Mapping[str, str | None]) -> str:
    """Source of the load-inputs cell for an input map (name → saved-value directory).

    Empty without inputs: nbclient skips empty cells (one kernel round trip less).
    """
    if not inputs:
        return ""
    return f"__import__({_KERNEL_MODULE!r}, fromlist=['_']).load_inputs(globals(), {inputs!r})"


def render_save(output_dir: str | None, outputs: list[str], metrics: list[str]) -> str:
    """Source of the save-outputs cell (empty when there is nothing to save)."""
    if not outputs and not metrics:
        return ""
    return (
        f"__import__({_KERNEL_MODULE!r}, fromlist=['_'])"
        f".save_outputs(globals(), {output_dir!r}, {outputs!r}, {metrics!r})"
    )


def _generated(source: str, tag: str, cell_id: str, **meta: Any) -> NotebookNode:
    # Built directly, not with nbformat.v4.new_code_cell: that validates every cell against
    # the JSON schema (several ms each), and plans build every step's notebook per request.
    return nbformat.from_dict(
        {
            "id": cell_id,
            "cell_type": "code",
            "metadata": {"tags": [tag], META_KEY: {"generated": tag, **meta}},
            "execution_count": None,
            "source": source,
            "outputs": [],
        }
    )


def build_step_notebook(
    source_nb: NotebookNode, pipeline: Pipeline, step_name: str
) -> NotebookNode:
    """Generate the notebook that runs one step in a fresh kernel.

    Cells, in order: ``parameters`` (assignments of the pipeline parameters the step
    reads; papermill injects overrides after it), definitions (replayed imports, functions,
    classes and state settings), load inputs, the step's own cells (ids and metadata kept,
    plus ``metadata.jupyter_pipeline.source_cell``), save outputs (and metrics). The load
    and save cells get their paths at run time (:func:`render_load`, :func:`render_save`).

    Args:
        source_nb: The user's notebook (not modified).
        pipeline: The analyzed pipeline.
        step_name: Which step.

    Returns:
        A new nbformat v4 notebook.

    Raises:
        KeyError: No step has that name.
    """
    step = pipeline.step(step_name)
    if not isinstance(source_nb, NotebookNode):
        source_nb = nbformat.from_dict(source_nb)
    # nbformat.v4.new_notebook(), without validating an empty notebook.
    nb = NotebookNode(nbformat=4, nbformat_minor=nbformat.v4.nbformat_minor, cells=[])
    nb.metadata = copy.deepcopy(source_nb.get("metadata", {}))
    nb.metadata.pop("papermill", None)
    nb.metadata.setdefault(
        "kernelspec",
        {"name": pipeline.kernel_name, "display_name": "Python 3", "language": "python"},
    )
    inputs = list(step.inputs) + [state_key(s) for s in step.state_inputs]
    outputs = list(step.outputs) + [state_key(s) for s in step.state_outputs]
    metrics = list(step.metrics) if step.role == "metrics" else []
    nb.metadata[META_KEY] = {
        "step": step.name,
        "role": step.role,
        "source_notebook": pipeline.notebook,
        "parameters": list(step.parameters),
        "inputs": inputs,
        "outputs": outputs,
        "metrics": metrics,
    }

    wanted = set(step.parameters)
    params = [p.source for p in pipeline.parameters if p.name in wanted]
    nb.cells.append(_generated("\n".join(params), PARAMETERS_TAG, "jp-parameters"))

    # The helper import (last, after any `from __future__` import) warms the load/save module
    # during pre-warming; the trailing `pass` keeps a snippet's last expression from displaying.
    lines: list[str] = []
    snippets = []
    derived = [d for d in step.definitions if d.kind is DefinitionKind.derived]
    for d in step.definitions:
        if d.kind is DefinitionKind.derived:
            continue
        source = d.source.rstrip("\n")
        snippets.append(
            {
                "cell": d.cell,
                "line": d.line,
                "start": len(lines) + 1,
                "lines": source.count("\n") + 1,
            }
        )
        lines.extend(source.split("\n"))
    lines += [f"__import__({_KERNEL_MODULE!r})", "pass"]
    nb.cells.append(
        _generated("\n".join(lines), DEFINITIONS_TAG, "jp-definitions", snippets=snippets)
    )
    if derived:
        # papermill runs a parameters cell's computed lines before its injected overrides, so
        # they see the defaults: run the step's parameters lines again here, in their order
        # (defaults, computed lines), then the overrides again (filled in at run time).
        parts = [(p.cell, p.line, p.source) for p in pipeline.parameters if p.name in wanted]
        parts += [(d.cell, d.line, d.source) for d in derived]
        source = "\n".join(src for _, _, src in sorted(parts))
        nb.cells.append(
            _generated(
                source,
                DERIVED_TAG,
                "jp-derived",
                code=source,
                cells=sorted({d.cell for d in derived}),
                # Runners inject every parameter a step reads; only values other than the
                # default are overrides to apply again (a default would undo an in-place
                # change such as `layers.append(2)`).
                defaults={p.name: p.default for p in pipeline.parameters if p.name in wanted},
            )
        )
    nb.cells.append(_generated(render_load(dict.fromkeys(inputs)), LOAD_TAG, "jp-load"))

    seen_ids = {c.id for c in nb.cells}
    for index in step.cells:
        cell = copy.deepcopy(source_nb.cells[index])
        cell_id = cell.get("id") or f"cell-{index}"
        if cell_id in seen_ids:
            cell_id = f"{cell_id[:50]}-{index}"
        seen_ids.add(cell_id)
        cell["id"] = cell_id
        cell.setdefault("metadata", {})
        cell.metadata[META_KEY] = {"source_cell": index}
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
            tags = cell.metadata.get("tags", [])
            if _PARAMETER_TAGS & set(tags):
                cell.metadata["tags"] = [t for t in tags if t not in _PARAMETER_TAGS] + [_SKIP_TAG]
        nb.cells.append(cell)

    nb.cells.append(_generated(render_save(None, outputs, metrics), SAVE_TAG, "jp-save"))
    nb.nbformat, nb.nbformat_minor = 4, max(5, source_nb.get("nbformat_minor", 5))
    return nb


def merge_outputs(
    source_nb: NotebookNode,
    executed: dict[str, NotebookNode],
    *,
    parameters: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    stopped_at: int | None = None,
) -> NotebookNode:
    """The source notebook with every code cell's outputs taken from its executed step.

    Each executed step notebook cell carrying ``metadata.jupyter_pipeline.source_cell``
    gives that source cell its outputs and execution count, and records the step in the
    cell's ``metadata.jupyter_pipeline.step``; code cells no step ran (skipped cells, cells
    after a clean stop) come out empty, as papermill leaves cells it did not run. The
    notebook "as if run top to bottom". Neither argument is modified.

    Args:
        source_nb: The user's notebook.
        executed: Step name → executed step notebook.
        parameters: The parameter overrides of the run, recorded as papermill records them:
            an ``injected-parameters`` cell after the parameters cell (when there are any)
            and ``metadata.papermill.parameters``.
        run: The run's own record, kept in ``metadata.jupyter_pipeline`` (run id, …).
        stopped_at: Source cell at which the notebook ended cleanly (``sys.exit()``): later
            cells are left unrun.

    Returns:
        A new notebook.
    """
    merged = nbformat.from_dict(source_nb)  # builds every dict and list anew: a deep copy
    merged.metadata.pop("papermill", None)
    filled: set[int] = set()
    for step_name, step_nb in executed.items():
        for cell in step_nb.get("cells", []):
            index = cell.get("metadata", {}).get(META_KEY, {}).get("source_cell")
            if index is None or not 0 <= index < len(merged.cells):
                continue
            target = merged.cells[index]
            target.setdefault("metadata", {})[META_KEY] = {"step": step_name}
            if target.cell_type != "code" or cell.get("cell_type") != "code":
                continue
            if stopped_at is not None and index > stopped_at >= 0:
                continue
            target.outputs = copy.deepcopy(cell.get("outputs", []))
            target.execution_count = cell.get("execution_count")
            if "papermill" in cell.get("metadata", {}):
                target.metadata["papermill"] = copy.deepcopy(cell["metadata"]["papermill"])
            filled.add(index)
    for index, cell in enumerate(merged.cells):
        if cell.cell_type == "code" and index not in filled:
            cell.outputs = []
            cell.execution_count = None
    if parameters is not None:
        _record_parameters(merged, dict(parameters))
    if run is not None:
        merged.metadata[META_KEY] = dict(run)
    return merged


def _record_parameters(nb: NotebookNode, parameters: dict[str, Any]) -> None:
    """Record parameter overrides as papermill does (``papermill.parameterize_notebook``).

    The ``injected-parameters`` cell replaces one already there, else follows the last
    parameters cell (papermill's ``parameters`` tag or Kale's ``pipeline-parameters``), else
    goes first. Without overrides papermill adds no cell, and neither does this.
    """
    nb.metadata["papermill"] = {"parameters": parameters}
    if not parameters:
        return
    from papermill.translators import translate_parameters

    kernel = nb.metadata.get("kernelspec", {}).get("name") or "python3"
    language = (
        nb.metadata.get("language_info", {}).get("name")
        or nb.metadata.get("kernelspec", {}).get("language")
        or "python"
    )
    cell = nbformat.v4.new_code_cell(
        translate_parameters(kernel, language, parameters, "Parameters")
    )
    cell.metadata["tags"] = ["injected-parameters"]
    tags = [c.get("metadata", {}).get("tags", []) or [] for c in nb.cells]
    injected = [i for i, t in enumerate(tags) if "injected-parameters" in t]
    params = [i for i, t in enumerate(tags) if {"parameters", "pipeline-parameters"} & set(t)]
    if injected:
        cell.id = nb.cells[injected[0]].get("id", cell.id)
        nb.cells[injected[0]] = cell
    elif params:
        nb.cells.insert(params[-1] + 1, cell)
    else:
        nb.cells.insert(0, cell)
