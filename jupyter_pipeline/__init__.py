"""jupyter-pipeline: turn a tagged notebook into a faithful pipeline."""

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jupyter_pipeline.outputs import load_outputs

__version__ = "0.1.0"
__all__ = ["__version__", "load_outputs"]


def __getattr__(name: str) -> object:
    # Lazy, so `import jupyter_pipeline` stays cheap for the CLI and for step kernels.
    if name == "load_outputs":
        from jupyter_pipeline.outputs import load_outputs

        return load_outputs
    raise AttributeError(f"module 'jupyter_pipeline' has no attribute {name!r}")


def skip_slow_optional_imports() -> None:
    """Keep an optional, import-heavy validator out of short-lived processes (CLI, KFP pods).

    ``import nbformat`` imports jsonschema, which imports ``rfc3987_syntax`` when it is
    installed (it comes with Jupyter Server) just to check ``iri`` string formats; that
    module builds Lark grammars at import, 1-2 s or more. Notebook schemas use no such
    format and jsonschema treats the module as optional, so these processes mark it absent.
    Kernels and the Jupyter server are other processes and keep it.
    """
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[assignment]
