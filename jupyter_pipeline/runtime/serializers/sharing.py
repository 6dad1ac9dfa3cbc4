"""Several values of one step: aliases, shared internals, views.

Two outputs of one step that are the same object are saved once; the second is an
``alias`` pointing at the first. Outputs that share inner objects (``d = {"x": a}``) are
pickled together in one ``group`` file so the sharing survives loading. Finding sharing
walks the objects' references, within a budget.
"""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import sys
import types
from typing import Any

from jupyter_pipeline.runtime.serializers.base import (
    _fresh_dir,
    _HashingFile,
    _type_name,
    _write_meta,
    value_dirname,
)
from jupyter_pipeline.runtime.serializers.pickling import _cloudpickle_dump
from jupyter_pipeline.runtime.serializers.registry import _unserializable, save_value
from jupyter_pipeline.runtime.serializers.views import _find_views, _sub_digest

# Beyond this many visited objects the sharing scan gives up and assumes sharing.
_SCAN_BUDGET = 200_000


_ATOMIC = (str, bytes, int, float, complex, bool, type(None), range, slice)
_OPAQUE = (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType, types.MethodType)


_LEAF = (types.FrameType, types.CodeType, types.GeneratorType, types.CoroutineType)


def _leaf_types() -> tuple[type, ...]:
    leaf: tuple[type, ...] = ()
    np = sys.modules.get("numpy")
    pd = sys.modules.get("pandas")
    if np is not None:
        leaf += (np.ndarray, np.generic)
    if pd is not None:
        leaf += (pd.DataFrame, pd.Series, pd.Index)
    return leaf


def _reachable(value: Any, budget: list[int]) -> set[int] | None:
    """Ids of the objects reachable from ``value`` (None if the scan ran out of budget).

    Containers and instance ``__dict__``s are followed; arrays and frames are leaves
    (pickle copies them whole anyway); classes, functions and modules are skipped (they
    travel by reference).
    """
    seen: set[int] = set()
    stack = [value]
    leaf_types = _leaf_types()
    main_dict = getattr(sys.modules.get("__main__"), "__dict__", None)
    while stack:
        obj = stack.pop()
        if isinstance(obj, _ATOMIC + _OPAQUE):
            continue
        oid = id(obj)
        if oid in seen:
            continue
        seen.add(oid)
        budget[0] -= 1
        if budget[0] < 0:
            return None
        if (
            (leaf_types and isinstance(obj, leaf_types))
            or isinstance(obj, _LEAF)
            or obj is main_dict
        ):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            stack.extend(r for r in gc.get_referents(obj) if not isinstance(r, type))
    return seen


def save_values(values: dict[str, Any], output_dir: str) -> dict[str, dict[str, Any]]:
    """Save several values of one step under ``output_dir/<name>/``, keeping their sharing.

    Identical objects are saved once (the others become ``alias`` entries); values that
    share inner objects are cloudpickled together (``group``), so loading them gives the
    same object graph.

    Args:
        values: Variable name → value.
        output_dir: Parent directory; each value gets ``value_dirname(name)`` inside it.

    Returns:
        Name → ``meta.json`` content, in the order of ``values``.

    Raises:
        UnserializableValue: A value cannot be saved (message names it).
    """
    os.makedirs(output_dir, exist_ok=True)
    metas: dict[str, dict[str, Any]] = {}
    first_by_id: dict[int, str] = {}
    unique: list[str] = []
    for name, value in values.items():
        if id(value) in first_by_id:
            continue
        first_by_id[id(value)] = name
        unique.append(name)

    # numpy views of another output array are saved as a view spec into that array, so
    # writes through one show in the other after loading, as in the notebook.
    views = _find_views({n: values[n] for n in unique})
    unique = [n for n in unique if n not in views]

    # Union-find over the unique values by shared reachable objects.
    parent = {n: n for n in unique}

    def find(n: str) -> str:
        while parent[n] != n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    owner: dict[int, str] = {}
    budget = [_SCAN_BUDGET]
    unknown: list[str] = []
    for name in unique:
        value = values[name]
        if isinstance(value, _ATOMIC):
            continue
        reach = _reachable(value, budget)
        if reach is None:
            unknown.append(name)
            continue
        for oid in reach:
            other = owner.setdefault(oid, name)
            if other != name:
                parent[find(name)] = find(other)
    # Values too big to scan might share with anything that is not a plain leaf (an array
    # or frame is a leaf: it could only be shared by being inside the unscanned value).
    if unknown:
        leaf_types = _leaf_types()
        for name in unique:
            value = values[name]
            if name != unknown[0] and not isinstance(value, _ATOMIC + leaf_types):
                parent[find(name)] = find(unknown[0])

    groups: dict[str, list[str]] = {}
    for name in unique:
        groups.setdefault(find(name), []).append(name)

    for members in groups.values():
        if len(members) == 1:
            name = members[0]
            metas[name] = save_value(
                values[name], os.path.join(output_dir, value_dirname(name)), name
            )
            continue
        head = members[0]
        head_dir = os.path.join(output_dir, value_dirname(head))
        _fresh_dir(head_dir)
        f = _HashingFile(os.path.join(head_dir, "group.pkl"))
        try:
            _cloudpickle_dump({m: values[m] for m in members}, io.BufferedWriter(f, 1 << 20))
        except Exception:
            f.close()
            shutil.rmtree(head_dir, ignore_errors=True)
            for m in members:  # name the culprit
                try:
                    _cloudpickle_dump(values[m], io.BytesIO())
                except Exception as exc:
                    raise _unserializable(m, values[m], exc) from exc
            raise
        f.close()
        for m in members:
            directory = os.path.join(output_dir, value_dirname(m))
            if m != head:
                _fresh_dir(directory)
            meta = {
                "name": m,
                "serializer": "group",
                "type": _type_name(values[m]),
                "digest": _sub_digest(f.digest, m),
                "size": f.size,
                "group": value_dirname(head),
                "file": "group.pkl",
                "key": m,
            }
            _write_meta(directory, meta)
            metas[m] = meta

    def alias(name: str, target: str, **extra: Any) -> None:
        """Save ``name`` as an alias of ``target``, whose meta it copies (readers follow it)."""
        directory = os.path.join(output_dir, value_dirname(name))
        _fresh_dir(directory)
        meta = {**metas[target], "name": name, "serializer": "alias"}
        # Another name for a view is that same object: the target rebuilds the view, and
        # its spec (an offset into the base) means nothing applied to the view itself.
        meta.pop("view", None)
        meta.update(target=value_dirname(target), **extra)
        _write_meta(directory, meta)
        metas[name] = meta

    for name, (base, spec) in views.items():
        if metas[base]["serializer"] != "npy":  # the base went into a pickle: save a copy
            directory = os.path.join(output_dir, value_dirname(name))
            metas[name] = save_value(values[name], directory, name)
        else:  # an alias of part of the base
            digest = _sub_digest(metas[base]["digest"], json.dumps(spec, sort_keys=True))
            alias(name, base, view=spec, digest=digest)

    for name, value in values.items():
        target = first_by_id[id(value)]
        if target != name:
            alias(name, target)
    return {name: metas[name] for name in values}
