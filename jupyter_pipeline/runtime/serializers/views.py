"""numpy views: an output that is a view of another output is saved as part of it.

Saving ``a`` and ``b = a[::2]`` as two files would double the data and, loaded, make two
unrelated arrays; a view is recorded as an alias of its base plus the slicing that
rebuilds it (:func:`_rebuild_view`), with a digest derived from the base's.
"""

from __future__ import annotations

import sys
from typing import Any

from jupyter_pipeline.runtime.serializers.base import DIGEST, _new_hash


def _rebuild_view(base: Any, spec: dict[str, Any]) -> Any:
    import numpy as np

    return np.ndarray(
        tuple(spec["shape"]),
        dtype=np.dtype(spec["dtype"]),
        buffer=base,
        offset=spec["offset"],
        strides=tuple(spec["strides"]),
    )


def _view_spec(value: Any, base: Any) -> dict[str, Any] | None:
    """How to rebuild ``value`` from ``base``'s buffer, if numpy can do it exactly."""
    spec = {
        "offset": value.__array_interface__["data"][0] - base.__array_interface__["data"][0],
        "shape": list(value.shape),
        "strides": list(value.strides),
        "dtype": value.dtype.str,
    }
    if spec["offset"] < 0:
        return None
    try:
        rebuilt = _rebuild_view(base, spec)
    except Exception:  # outside the base's buffer, or numpy refuses the strides
        return None
    return spec if rebuilt.__array_interface__ == value.__array_interface__ else None


def _find_views(values: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Output arrays that are views into another output array: name → (base name, spec).

    Arrays over the same memory (same numpy owner) are taken largest first; each becomes a
    view of an earlier, C-contiguous one if it lies inside it, else is saved on its own.
    """
    np = sys.modules.get("numpy")
    if np is None:
        return {}
    by_owner: dict[int, list[str]] = {}
    for name, value in values.items():
        if type(value) is np.ndarray and not value.dtype.hasobject:
            owner = value.base if value.base is not None else value
            by_owner.setdefault(id(owner), []).append(name)
    views: dict[str, tuple[str, dict[str, Any]]] = {}
    for names in by_owner.values():
        if len(names) < 2:
            continue
        roots: list[str] = []
        for name in sorted(names, key=lambda n: -values[n].nbytes):
            value = values[name]
            simple = value.dtype.names is None and value.dtype.subdtype is None
            for root in roots if simple else []:
                spec = _view_spec(value, values[root])
                if spec is not None:
                    views[name] = (root, spec)
                    break
            else:
                if value.flags.c_contiguous:
                    roots.append(name)
    return views


def _sub_digest(digest: str, key: str) -> str:
    h = _new_hash()
    h.update(f"{digest}\0{key}".encode())
    return f"{DIGEST}:{h.hexdigest()}"
