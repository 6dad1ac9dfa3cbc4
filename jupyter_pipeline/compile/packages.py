"""Which installed distributions a notebook (or one step) imports, pinned from this environment.

Used twice: ``jupyter-pipeline image`` writes a requirements file holding exactly the
packages the notebook imports, and ``packages_mode="pip"`` makes each compiled step install
only what *its* imports need. Import names are mapped to distributions with
:func:`importlib.metadata.packages_distributions` (``sklearn`` → ``scikit-learn``); the
standard library and modules no installed distribution provides are left out.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from nbformat import NotebookNode

from jupyter_pipeline.analysis.source import to_python
from jupyter_pipeline.model import Pipeline, Step

__all__ = [
    "DOCKERFILE_NAME",
    "REQUIREMENTS_NAME",
    "distributions_for_modules",
    "imported_modules",
    "notebook_requirements",
    "pinned",
    "project_requirement",
    "step_requirements",
    "write_image_files",
]

PROJECT = "jupyter-pipeline"
DOCKERFILE_NAME = "Dockerfile"
REQUIREMENTS_NAME = "requirements.txt"
# The step runtime's own dependencies come with the project; never list them twice.
_ALWAYS_PRESENT = {"jupyter-pipeline", "jupyter_pipeline"}


def imported_modules(sources: Iterable[str]) -> set[str]:
    """Top-level module names imported anywhere in ``sources`` (IPython syntax allowed).

    Relative imports are skipped: they refer to the user's own files, not distributions.
    """
    found: set[str] = set()
    for source in sources:
        found |= _modules_of(source)
    return found


@functools.lru_cache(maxsize=4096)
def _modules_of(source: str) -> frozenset[str]:
    # Cached: pip mode asks for every step's and its producers' sources, the same cells
    # over and over.
    try:
        tree = ast.parse(to_python(source))
    except SyntaxError:
        return frozenset()
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return frozenset(found)


@functools.lru_cache(maxsize=1)
def _module_map() -> Mapping[str, list[str]]:
    return md.packages_distributions()


def distributions_for_modules(modules: Iterable[str]) -> list[str]:
    """Map top-level import names to installed distribution names, sorted and deduplicated.

    Standard-library modules and names no installed distribution provides (the user's own
    modules next to the notebook) are dropped.
    """
    mapping = _module_map()
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    dists: set[str] = set()
    for module in modules:
        if module in stdlib or module == "__future__":
            continue
        for dist in mapping.get(module, []):
            if dist not in _ALWAYS_PRESENT:
                dists.add(dist)
    return sorted(dists, key=str.lower)


def pinned(dists: Iterable[str]) -> list[str]:
    """``["pandas"]`` → ``["pandas==3.1.1"]`` with the versions installed here."""
    out = []
    for dist in dists:
        try:
            out.append(f"{dist}=={md.version(dist)}")
        except md.PackageNotFoundError:
            out.append(dist)
    return out


def project_requirement() -> str:
    """The requirement that installs this project (and kfp, a dependency) at its version."""
    from jupyter_pipeline import __version__

    return f"{PROJECT}=={__version__}"


def _cell_sources(nb: NotebookNode, cells: Iterable[int]) -> list[str]:
    out = []
    for i in cells:
        cell = nb.cells[i]
        if cell.get("cell_type") == "code":
            src = cell.get("source", "")
            out.append("".join(src) if isinstance(src, list) else src)
    return out


def step_modules(pipeline: Pipeline, nb: NotebookNode, step: Step) -> set[str]:
    """Modules a step needs: its replayed definitions, its own cells, and its producers'.

    A producer's imports count because loading the value it passed (a DataFrame, a fitted
    estimator) needs the library that made it, even when this step never imports it.
    """
    sources = [d.source for d in step.definitions] + _cell_sources(nb, step.cells)
    modules = imported_modules(sources)
    producers = set(step.input_sources.values()) | set(step.state_inputs.values())
    for name in sorted(producers):
        try:
            producer = pipeline.step(name)
        except KeyError:
            continue
        modules |= imported_modules(
            [d.source for d in producer.definitions] + _cell_sources(nb, producer.cells)
        )
    return modules


def step_requirements(pipeline: Pipeline, nb: NotebookNode, step: Step) -> list[str]:
    """Pinned requirements for one step (what ``packages_mode="pip"`` installs in its pod)."""
    return pinned(distributions_for_modules(step_modules(pipeline, nb, step)))


def notebook_requirements(nb: NotebookNode) -> list[str]:
    """Pinned requirements for everything a whole notebook imports."""
    return pinned(
        distributions_for_modules(imported_modules(_cell_sources(nb, range(len(nb.cells)))))
    )


_DOCKERFILE = """\
# Step image for the notebook {notebook}: the project, kfp and exactly the packages the
# notebook imports, pinned from the environment it was written in, so KFP pods start without
# installing anything. Written by `jupyter-pipeline image`; build and push it, then compile with
#   jupyter-pipeline compile {notebook} --image <registry>/{tag}
# docker build -t {tag} .
FROM {base_image}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
COPY {requirements} /tmp/{requirements}
RUN python -m pip install --no-cache-dir -r /tmp/{requirements} \\
    && python -m ipykernel install --sys-prefix --name python3
WORKDIR /home/jovyan
"""


def write_image_files(
    nb: NotebookNode,
    notebook_path: str,
    out_dir: str | Path,
    *,
    base_image: str | None = None,
    project_spec: str | None = None,
    tag: str | None = None,
) -> tuple[Path, Path]:
    """Write a Dockerfile and a pinned requirements.txt for a notebook's step image.

    Args:
        nb: The notebook.
        notebook_path: Its path (named in the Dockerfile's comments).
        out_dir: Folder to write into (created if missing).
        base_image: ``FROM`` image; defaults to the official slim image of this Python.
        project_spec: Requirement line installing this project; defaults to
            :func:`project_requirement` (point it at a wheel or VCS URL if the project is not
            on your package index).
        tag: Suggested image tag in the comments.

    Returns:
        The paths of the Dockerfile and the requirements file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [project_spec or project_requirement(), *notebook_requirements(nb)]
    stem = Path(notebook_path).stem
    requirements = out / REQUIREMENTS_NAME
    requirements.write_text(
        f"# Pinned from the environment that ran `jupyter-pipeline image "
        f"{Path(notebook_path).name}`.\n" + "\n".join(lines) + "\n",
        encoding="utf-8",
    )
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    dockerfile = out / DOCKERFILE_NAME
    dockerfile.write_text(
        _DOCKERFILE.format(
            notebook=Path(notebook_path).name,
            base_image=base_image or f"python:{version}-slim",
            requirements=REQUIREMENTS_NAME,
            tag=tag or f"{stem.lower().replace('_', '-')}-python-step:latest",
        ),
        encoding="utf-8",
    )
    return dockerfile, requirements
