"""Typed data passing between steps: a serializer registry chosen by the value's type.

This package runs inside step kernels, so it imports only the standard library at module
level. numpy, pandas, pyarrow, scikit-learn and joblib are touched only when a value's type
module is already loaded (``sys.modules``), so a step that never imported pandas never pays
for it.

Layout: every saved variable gets its own directory holding ``meta.json`` plus the data
file(s). ``meta.json`` records the serializer, the value's type, a content digest and the
size. Two outputs of one step that are the same object are saved once; the second is an
``alias`` pointing at the first. Outputs that share inner objects (``d = {"x": a}``) are
pickled together in one ``group`` file so the sharing survives loading.

Modules:

* :mod:`.base` — the :class:`Serializer` interface, errors, digests, ``meta.json``;
* :mod:`.registry` — the registry; saving and loading one value;
* :mod:`.sharing` — saving a step's values together: aliases, groups, views;
* :mod:`.views` — numpy views of another output, saved as part of it;
* :mod:`.frames` — pandas through Arrow (or parquet);
* :mod:`.families` — numpy arrays, scikit-learn estimators, the cloudpickle catch-all;
* :mod:`.pickling` — notebook-defined classes and functions, by reference or by value.

Pickles saved before this package was split name its helpers as attributes of
``jupyter_pipeline.runtime.serializers`` (``_resolve_main``, ``_main_lookup``…): they are
imported here so that those cache entries still load.
"""

from __future__ import annotations

from jupyter_pipeline.runtime.serializers.base import (
    DIGEST,
    META,
    Serializer,
    UnserializableValue,
    Unsupported,
    _hash_file,
    value_dirname,
)
from jupyter_pipeline.runtime.serializers.families import (
    CloudpickleSerializer,
    NumpySerializer,
    SklearnSerializer,
)
from jupyter_pipeline.runtime.serializers.frames import PandasSerializer
from jupyter_pipeline.runtime.serializers.pickling import (
    ClassNotImportable,
    _main_lookup,
    _main_reduce,
    _rebind_globals,
    _resolve_main,
)
from jupyter_pipeline.runtime.serializers.registry import (
    describe,
    load_value,
    load_values,
    register_serializer,
    save_value,
    serializers,
)
from jupyter_pipeline.runtime.serializers.sharing import save_values
from jupyter_pipeline.runtime.serializers.views import _rebuild_view

__all__ = [
    "DIGEST",
    "META",
    "ClassNotImportable",
    "CloudpickleSerializer",
    "NumpySerializer",
    "PandasSerializer",
    "Serializer",
    "SklearnSerializer",
    "UnserializableValue",
    "Unsupported",
    "_hash_file",
    "_main_lookup",
    "_main_reduce",
    "_rebind_globals",
    "_rebuild_view",
    "_resolve_main",
    "describe",
    "load_value",
    "load_values",
    "register_serializer",
    "save_value",
    "save_values",
    "serializers",
    "value_dirname",
]
