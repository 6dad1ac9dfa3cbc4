"""Pre-importing: let a warming kernel import the libraries its step's own cells import.

Pre-warming runs a step's parameters and replayed definitions before its inputs exist. But
real notebooks import most libraries in the cell that first needs them
(``from sklearn.linear_model import Lasso`` right above the fit), and those imports are part
of the step's own cells, so they would run only once the inputs arrive — on the critical
path. This module appends to the step notebook's definitions cell a guarded import of each
module the step's cells import at top level. Importing a module earlier does not change
what the notebook computes (the cell's own ``import`` still binds the names, from
``sys.modules``), with exceptions this leaves alone: a step that edits ``sys.path`` or the
environment, changes directory, or picks a matplotlib backend before importing is not
pre-imported, and a module that fails to import is left for the cell to fail on, exactly
as in the notebook.

:func:`fork_preimports` chooses the modules a fork server's zygote imports once for every
kernel of a run (:mod:`jupyter_pipeline.runtime.forkserver`).
"""

from __future__ import annotations

import ast
import copy
import re
from typing import Any

from jupyter_pipeline.analysis.source import CellSyntaxError, parse_cell
from jupyter_pipeline.runtime.notebook import DEFINITIONS_TAG, META_KEY

__all__ = ["add_preimports", "fork_preimports", "preimport_modules"]

# Code that can change where (or what) a later import resolves.
_PATH_STATE = (
    r"sys\.path|os\.environ|putenv|chdir|addsitedir|import_module|sys\.modules|importlib|"
    r"__import__|%env|%cd"
)
# ... or how it loads, for a step importing early: picking a matplotlib backend.
_IMPORT_STATE = re.compile(_PATH_STATE + r"|matplotlib\.use|%matplotlib")
# ... or, for a zygote pre-importing for every kernel of the run (which would import the
# wrong module), import hooks, extensions and installing packages. (matplotlib backends,
# by contrast, are picked at first use, not at import.)
_RESOLUTION_STATE = re.compile(
    _PATH_STATE + r"|sys\.meta_path|sys\.path_hooks|%run|%load_ext|%reload_ext|"
    r"%autoreload|%pip|%conda|%mamba|pip\s+install|conda\s+install|mamba\s+install"
)
_MARK = "# jupyter-pipeline: pre-import the libraries this step's cells import"


def _parse(source: str) -> ast.Module | None:
    try:
        return parse_cell(source).tree
    except CellSyntaxError:
        return None


def _top_imports(sources: list[str], unsafe: re.Pattern[str]) -> list[str]:
    if any(unsafe.search(s) for s in sources):
        return []
    modules: list[str] = []
    for source in sources:
        tree = _parse(source)
        if tree is None:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                modules += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.append(node.module)
                modules += [f"{node.module}.{a.name}" for a in node.names if a.name != "*"]
    return list(dict.fromkeys(modules))


def preimport_modules(sources: list[str]) -> list[str]:
    """Modules imported at top level by ``sources``, in order, or [] if unsafe to pre-import.

    ``from pkg import name`` contributes ``pkg`` and ``pkg.name`` (``name`` may be a
    submodule; a failed guess costs one failed lookup). Relative imports are skipped.
    """
    return _top_imports(sources, _IMPORT_STATE)


def fork_preimports(sources: list[str]) -> list[str]:
    """Modules a run's fork server may pre-import for all its kernels, in order.

    ``sources``: every code snippet the run's steps execute (replayed definitions and the
    steps' cells). Top-level imports only (``from pkg import name`` contributes ``pkg`` and
    ``pkg.name``); nothing when any snippet changes where imports resolve. The zygote itself
    leaves out modules found in the notebook's folder and modules whose import has
    visible effects.
    """
    return _top_imports(sources, _RESOLUTION_STATE)


def add_preimports(step_nb: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a step notebook whose definitions cell also pre-imports modules.

    The step's own cells are those carrying ``metadata.jupyter_pipeline.source_cell``. The
    notebook is returned unchanged if it has no definitions cell or nothing to pre-import.
    """
    cells = step_nb.get("cells", [])
    own = [
        _text(c.get("source", ""))
        for c in cells
        if c.get("cell_type") == "code"
        and "source_cell" in (c.get("metadata", {}).get(META_KEY) or {})
    ]
    modules = preimport_modules(own)
    target = next(
        (
            i
            for i, c in enumerate(cells)
            if DEFINITIONS_TAG in (c.get("metadata", {}).get("tags") or [])
        ),
        None,
    )
    if not modules or target is None:
        return step_nb
    lines = [_MARK, "for __jp_module in " + repr(modules) + ":"]
    lines += [
        "    try:",
        "        __import__(__jp_module)",
        "    except Exception:",  # the cell's own import will fail as it would in the notebook
        "        pass",
        "del __jp_module",
    ]
    out = copy.deepcopy(step_nb)
    cell = out["cells"][target]
    source = _text(cell.get("source", "")).rstrip("\n")
    # Keep the definitions cell's last line (`pass`, which keeps it from displaying) last.
    cell["source"] = source + "\n" + "\n".join(lines) + "\npass"
    return out


def _text(source: Any) -> str:
    return "".join(source) if isinstance(source, list) else str(source)
