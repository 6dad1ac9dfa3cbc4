"""Which installed distributions a notebook (or one step) imports, pinned from this environment.

Used twice: ``jupyter-pipeline image`` writes a requirements file holding exactly the
packages the notebook imports, and ``packages_mode="pip"`` makes each compiled step install
only what *its* imports need. Import names are mapped to distributions with
:func:`importlib.metadata.packages_distributions` (``sklearn`` → ``scikit-learn``), pinned
to the versions installed here. A module not installed here falls back to its usual
distribution from :data:`KNOWN_DISTRIBUTIONS`, unpinned (the notebook may have been written
in another environment than the one building its image); the standard library and the
notebook's own modules (files next to it) are left out, and anything else is reported.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from nbformat import NotebookNode

from jupyter_pipeline.analysis.source import to_python
from jupyter_pipeline.model import Pipeline, Step

__all__ = [
    "DOCKERFILE_NAME",
    "KNOWN_DISTRIBUTIONS",
    "REQUIREMENTS_NAME",
    "ImageFiles",
    "Requirements",
    "distributions_for_modules",
    "imported_modules",
    "notebook_requirements",
    "pinned",
    "project_requirement",
    "resolve_requirements",
    "step_requirements",
    "write_image_files",
]

PROJECT = "jupyter-pipeline"
DOCKERFILE_NAME = "Dockerfile"
REQUIREMENTS_NAME = "requirements.txt"
# The step runtime's own dependencies come with the project; never list them twice.
_ALWAYS_PRESENT = {"jupyter-pipeline", "jupyter_pipeline"}
_UNPINNED_NOTE = "  # not installed where this file was written: unpinned"

# The usual distribution of common import names, for modules not installed here. Names that
# differ from their import name first; then common ones spelled the same.
KNOWN_DISTRIBUTIONS: dict[str, str] = {
    "sklearn": "scikit-learn", "skimage": "scikit-image", "cv2": "opencv-python",
    "PIL": "pillow", "yaml": "PyYAML", "bs4": "beautifulsoup4", "dateutil": "python-dateutil",
    "dotenv": "python-dotenv", "jwt": "PyJWT", "attr": "attrs", "Crypto": "pycryptodome",
    "OpenSSL": "pyOpenSSL", "docx": "python-docx", "pptx": "python-pptx", "fitz": "PyMuPDF",
    "imblearn": "imbalanced-learn", "umap": "umap-learn", "skopt": "scikit-optimize",
    "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "sqlalchemy": "SQLAlchemy",
    "jinja2": "Jinja2", "kafka": "kafka-python", "serial": "pyserial", "Levenshtein":
    "python-Levenshtein", "sentence_transformers": "sentence-transformers",
    "pytorch_lightning": "pytorch-lightning", "tf_keras": "tf-keras", "pyspark": "pyspark",
    **{
        name: name
        for name in (
            "numpy", "pandas", "scipy", "matplotlib", "seaborn", "plotly", "bokeh", "altair",
            "statsmodels", "sympy", "networkx", "xgboost", "lightgbm", "catboost", "torch",
            "torchvision", "torchaudio", "tensorflow", "keras", "jax", "transformers",
            "datasets", "tokenizers", "nltk", "spacy", "gensim", "shap", "optuna", "mlflow",
            "wandb", "requests", "httpx", "tqdm", "joblib", "pyarrow", "polars", "dask",
            "numba", "h5py", "openpyxl", "xlrd", "lxml", "pydantic", "boto3", "ipywidgets",
            "xarray", "geopandas", "shapely", "pyproj", "folium", "wordcloud", "tabulate",
            "pymongo", "redis", "hdbscan", "missingno", "yellowbrick", "graphviz", "pydot",
            "cloudpickle", "tiktoken", "openai",
        )
    },
}  # fmt: skip


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


@dataclass
class Requirements:
    """What a set of imports needs, as requirement lines.

    Attributes:
        lines: Requirement lines: installed distributions pinned, then the usual
            distributions of known modules not installed here, unpinned.
        unpinned: Those unpinned distributions.
        unresolved: Imported modules neither installed here, nor known, nor the notebook's
            own files: nothing is listed for them.
    """

    lines: list[str] = field(default_factory=list)
    unpinned: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)


def _is_local(module: str, folder: Path | None) -> bool:
    """The notebook's own module: ``module.py`` or a ``module/`` package next to it."""
    if folder is None:
        return False
    return (folder / f"{module}.py").is_file() or (folder / module).is_dir()


def resolve_requirements(modules: Iterable[str], folder: str | Path | None = None) -> Requirements:
    """Requirement lines for ``modules``, with the fallbacks described in the module docs.

    Args:
        modules: Top-level import names.
        folder: The notebook's folder: a module found there is the user's own code.
    """
    local = Path(folder) if folder is not None else None
    mapping = _module_map()
    stdlib = set(getattr(sys, "stdlib_module_names", ()))
    installed: set[str] = set()
    fallback: set[str] = set()
    unresolved: set[str] = set()
    for module in modules:
        if module in stdlib or module == "__future__":
            continue
        if module in mapping:
            installed |= {d for d in mapping[module] if d not in _ALWAYS_PRESENT}
        elif _is_local(module, local) or module in _ALWAYS_PRESENT:
            continue
        elif module in KNOWN_DISTRIBUTIONS:
            fallback.add(KNOWN_DISTRIBUTIONS[module])
        else:
            unresolved.add(module)
    fallback -= installed
    unpinned = sorted(fallback, key=str.lower)
    return Requirements(
        lines=pinned(sorted(installed, key=str.lower)) + [d + _UNPINNED_NOTE for d in unpinned],
        unpinned=unpinned,
        unresolved=sorted(unresolved, key=str.lower),
    )


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
    """Requirements for one step (what ``packages_mode="pip"`` installs in its pod).

    Pinned where installed here; known modules missing here fall back to their usual
    distribution, unpinned (:func:`resolve_requirements`).
    """
    return [
        line.removesuffix(_UNPINNED_NOTE)
        for line in resolve_requirements(step_modules(pipeline, nb, step)).lines
    ]


def notebook_requirements(nb: NotebookNode, folder: str | Path | None = None) -> Requirements:
    """Requirements for everything a whole notebook imports (see :func:`resolve_requirements`).

    Args:
        nb: The notebook.
        folder: Its folder (modules there are its own, not distributions).
    """
    return resolve_requirements(imported_modules(_cell_sources(nb, range(len(nb.cells)))), folder)


class ImageFiles(NamedTuple):
    """What :func:`write_image_files` wrote.

    Attributes:
        dockerfile: The Dockerfile.
        requirements: The requirements file.
        unpinned: Distributions listed unpinned (their modules are not installed here).
        unresolved: Imported modules with nothing listed (not installed, not known).
    """

    dockerfile: Path
    requirements: Path
    unpinned: list[str]
    unresolved: list[str]


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
) -> ImageFiles:
    """Write a Dockerfile and a requirements.txt for a notebook's step image.

    Distributions installed here are pinned; known ones missing here are listed unpinned,
    and imports nothing is known about are left out (see :class:`ImageFiles`).

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
        The paths written, and what could not be pinned.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    found = notebook_requirements(nb, Path(notebook_path).parent)
    lines = [project_spec or project_requirement(), *found.lines]
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
    return ImageFiles(dockerfile, requirements, found.unpinned, found.unresolved)
