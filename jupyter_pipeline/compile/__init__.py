"""KFP v2 compilation: an analyzed notebook → a pipeline spec (IR) a KFP cluster runs as is.

Built with kfp's own SDK and compiler (kfp is imported only when compiling). Each step is a
lightweight Python component that runs the project's step runtime on the step notebook
embedded in it; see :mod:`jupyter_pipeline.compile.builder` for the mapping of variables,
parameters, metrics, images, resources, caching, retries, env vars and secrets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbformat import NotebookNode

from jupyter_pipeline.compile.builder import (
    CompiledPackage,
    CompileError,
    StepComponent,
    build_pipeline_func,
    compile_package,
)
from jupyter_pipeline.compile.config import ConfigError, KfpConfig, SecretEnv, load_config
from jupyter_pipeline.model import Pipeline

__all__ = [
    "CompileError",
    "CompiledPackage",
    "ConfigError",
    "KfpConfig",
    "SecretEnv",
    "StepComponent",
    "build_pipeline_func",
    "compile_package",
    "compile_pipeline",
    "load_config",
    "write_yaml",
]


def compile_pipeline(
    pipeline: Pipeline, source_nb: NotebookNode | str | Path, **options: Any
) -> dict[str, Any]:
    """Compile an analyzed notebook to KFP v2's pipeline spec (IR) as a dict.

    Args:
        pipeline: The analyzed pipeline; error diagnostics stop compilation.
        source_nb: The notebook it was analyzed from (node or path).
        **options: ``image``, ``packages_mode`` ("image" | "pip"), ``config`` (KfpConfig),
            ``env``, ``secrets``, ``html``, ``workdir``; see :func:`build_pipeline_func`.

    Returns:
        The pipeline spec. Kubernetes settings (secrets) live in the platform spec, which
        :func:`compile_package` and :func:`write_yaml` also give.

    Raises:
        CompileError: The pipeline cannot be compiled.
    """
    return compile_package(pipeline, source_nb, **options).pipeline_spec


def write_yaml(
    pipeline: Pipeline,
    source_nb: NotebookNode | str | Path,
    path: str | Path,
    **options: Any,
) -> CompiledPackage:
    """Compile and write the pipeline YAML (the file ``kfp.Client`` and the KFP UI take).

    Options are those of :func:`compile_pipeline`. Returns the compiled package.
    """
    package = compile_package(pipeline, source_nb, **options)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(package.yaml, encoding="utf-8")
    return package
