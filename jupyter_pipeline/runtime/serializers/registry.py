"""The serializer registry, and saving and loading one value.

The first registered serializer that accepts a value (and does not raise
:class:`~.base.Unsupported`) saves it; ``meta.json`` records which, so loading picks the
same one. :func:`register_serializer` adds one (before the built-in ones by default).
"""

from __future__ import annotations

import os
import pickle
import shutil
from typing import Any

from jupyter_pipeline.runtime.serializers.base import (
    Serializer,
    UnserializableValue,
    Unsupported,
    _fresh_dir,
    _read_meta,
    _type_name,
    _write_meta,
)
from jupyter_pipeline.runtime.serializers.families import (
    CloudpickleSerializer,
    NumpySerializer,
    SklearnSerializer,
)
from jupyter_pipeline.runtime.serializers.frames import PandasSerializer
from jupyter_pipeline.runtime.serializers.pickling import ClassNotImportable
from jupyter_pipeline.runtime.serializers.views import _rebuild_view

# The registry: first serializer that accepts (and does not raise Unsupported) wins.
serializers: list[Serializer] = [
    NumpySerializer(),
    PandasSerializer("arrow"),
    SklearnSerializer(),
    CloudpickleSerializer(),
]
_by_name: dict[str, Serializer] = {s.name: s for s in serializers}
_by_name["parquet"] = PandasSerializer("parquet")  # loads what a parquet-configured step saved


def register_serializer(serializer: Serializer, *, first: bool = True) -> None:
    """Add a serializer to the registry.

    Args:
        serializer: The serializer; its ``name`` is recorded in ``meta.json``.
        first: Try it before the built-in ones (default) rather than just before the
            cloudpickle catch-all.
    """
    serializers.insert(0 if first else len(serializers) - 1, serializer)
    _by_name[serializer.name] = serializer


def _unserializable(name: str, value: Any, exc: BaseException) -> UnserializableValue:
    if isinstance(exc, ClassNotImportable):
        return UnserializableValue(
            f"cannot pass variable {name!r} ({_type_name(value)}) to later steps: {exc}. "
            "Make the class importable (define it at the top level of a module), convert the "
            "value to a plain type, or tag these cells into one step."
        )
    return UnserializableValue(
        f"cannot pass variable {name!r} ({_type_name(value)}) to later steps: "
        f"{type(exc).__name__}: {exc}. Recompute it in the consuming step, "
        "or tag these cells into one step."
    )


def save_value(value: Any, directory: str, name: str = "value") -> dict[str, Any]:
    """Save one value into ``directory`` (replaced if it exists) with the first fitting serializer.

    Args:
        value: The object.
        directory: Its directory (created; an old one is removed first).
        name: Variable name, for ``meta.json`` and error messages.

    Returns:
        The ``meta.json`` content: name, serializer, type, digest, size, file.

    Raises:
        UnserializableValue: No serializer could save it.
    """
    _fresh_dir(directory)
    last: BaseException | None = None
    for serializer in serializers:
        if not serializer.accepts(value):
            continue
        try:
            digest, size, extra = serializer.save(value, directory)
        except Unsupported as exc:
            last = exc
            _fresh_dir(directory)
            continue
        except Exception as exc:
            shutil.rmtree(directory, ignore_errors=True)
            raise _unserializable(name, value, exc) from exc
        meta = {
            "name": name,
            "serializer": serializer.name,
            "type": _type_name(value),
            "digest": digest,
            "size": size,
            **extra,
        }
        _write_meta(directory, meta)
        return meta
    raise _unserializable(name, value, last or TypeError("no serializer"))  # pragma: no cover


def load_value(directory: str, _cache: dict[str, Any] | None = None) -> Any:
    """Load a value saved by :func:`save_value` or :func:`save_values`.

    Args:
        directory: The value's directory.
        _cache: Shared cache (file path → loaded object) so aliases and group members
            loaded together come back as the same objects.
    """
    cache = {} if _cache is None else _cache
    directory = os.path.realpath(directory)
    meta = _read_meta(directory)
    kind = meta["serializer"]
    if kind == "alias":
        target = load_value(os.path.join(os.path.dirname(directory), meta["target"]), cache)
        if "view" not in meta:
            return target
        key = directory + "#view"
        if key not in cache:
            cache[key] = _rebuild_view(target, meta["view"])
        return cache[key]
    if kind == "group":
        group_dir = os.path.join(os.path.dirname(directory), meta["group"])
        path = os.path.join(group_dir, meta["file"])
        if path not in cache:
            with open(path, "rb") as f:
                cache[path] = pickle.load(f)
        return cache[path][meta["key"]]
    path = os.path.join(directory, meta.get("file", ""))
    if path not in cache:
        serializer = _by_name.get(kind)
        if serializer is None:
            raise ValueError(f"{directory}: unknown serializer {kind!r}")
        cache[path] = serializer.load(directory, meta)
    return cache[path]


def load_values(paths: dict[str, str]) -> dict[str, Any]:
    """Load several values (name → directory) so shared objects stay shared."""
    cache: dict[str, Any] = {}
    return {name: load_value(directory, cache) for name, directory in paths.items()}


def describe(directory: str) -> dict[str, Any]:
    """Return the ``meta.json`` of a saved value."""
    return _read_meta(directory)
